// The signaling wire (docs/protocol.md) from a browser: Ed25519 identities through
// WebCrypto, signed calls over fetch, one call per request.
//
// Every call is signed as  <method>:<username>:<context>:<Date.now()>  where the
// context is what the call is about (protocol.md §4); the server checks the method and
// context against the call, so the table below must match the server's.

const CONTEXT = {
  getUser: (p) => p.username,
  publishService: (p) => p.serviceFqn,
  getService: (p) => p.serviceFqn,
  deleteService: (p) => p.serviceFqn,
  answerOffer: (p) => p.offerId,
  getOfferAnswer: (p) => p.offerId,
  addIceCandidates: (p) => p.offerId,
  getIceCandidates: (p) => `${p.offerId}:${p.since ?? 0}`,
  poll: null,
};

export function toBase64(bytes) {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text);
}

export function fromBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** A fresh anonymous name, in the shape every Rondevu client makes them. */
export function anonymousName() {
  const random = new Uint8Array(3);
  crypto.getRandomValues(random);
  const hex = Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
  return `anon-${Date.now().toString(36)}-${hex}`;
}

/** A username and the Ed25519 key pair that claims it (kept in memory only). */
export class Identity {
  constructor(username, keyPair, publicKey) {
    this.username = username;
    this.keyPair = keyPair;
    this.publicKey = publicKey; // base64 of the raw 32 bytes
  }

  static async generate(username = anonymousName()) {
    const keyPair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, [
      "sign",
      "verify",
    ]);
    const raw = await crypto.subtle.exportKey("raw", keyPair.publicKey);
    return new Identity(username, keyPair, toBase64(raw));
  }

  /** The identity of a known key: ``seed`` is the 32-byte private key (protocol.md §4),
   * e.g. from an identity file (``privateKey`` in base64, `fromBase64`). */
  static async fromSeed(username, seed) {
    // WebCrypto imports a raw Ed25519 seed only as PKCS #8: a fixed 16-byte header, then it.
    const header = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    const pkcs8 = new Uint8Array([...header, ...seed]);
    const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", privateKey); // its "x" is the public key
    const publicKey = toBase64(fromBase64(jwk.x.replace(/-/g, "+").replace(/_/g, "/") + "="));
    return new Identity(username, { privateKey }, publicKey);
  }

  async sign(message) {
    const data = new TextEncoder().encode(message);
    const signature = await crypto.subtle.sign({ name: "Ed25519" }, this.keyPair.privateKey, data);
    return toBase64(signature);
  }
}

/** A failed call: ``message`` is the server's error text (the protocol has no codes). */
export class RpcError extends Error {}

/** Signed calls to one server for one identity. */
export class Api {
  constructor(baseUrl, identity) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.identity = identity;
    this.info = null;
  }

  /** ``GET /``: the server's name, version and extensions (cached). */
  async serverInfo() {
    if (this.info === null) {
      const reply = await fetch(`${this.baseUrl}/`, { cache: "no-store" });
      this.info = await reply.json();
    }
    return this.info;
  }

  /** The longest hold the server offers (``extensions.longPoll``), or 0. */
  async longPollMs() {
    const info = await this.serverInfo();
    return info.extensions?.longPoll?.maxWaitMs ?? 0;
  }

  async call(method, params = {}, { keepalive = false, signal } = {}) {
    const context = CONTEXT[method];
    const user = this.identity.username;
    const now = Date.now();
    const message =
      context === null ? `${method}:${user}:${now}` : `${method}:${user}:${context(params)}:${now}`;
    const body = {
      method,
      message,
      signature: await this.identity.sign(message),
      publicKey: this.identity.publicKey,
      params,
    };
    const reply = await fetch(`${this.baseUrl}/rpc`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      keepalive,
      signal,
    });
    let answer;
    try {
      answer = await reply.json();
    } catch {
      throw new RpcError(`HTTP ${reply.status}`);
    }
    if (!answer || answer.success !== true) {
      throw new RpcError(answer?.error ?? `HTTP ${reply.status}`);
    }
    return answer.result;
  }

  /** Make sure the name is ours: a free name is claimed by the first signed call. */
  async claim() {
    const user = this.identity.username;
    const held = await this.call("getUser", { username: user });
    if (!held.available && held.publicKey !== this.identity.publicKey) {
      throw new RpcError(`Username "${user}" is held by another key`);
    }
    await this.call("poll", { since: Date.now() }); // authenticated: claims a free name
  }
}
