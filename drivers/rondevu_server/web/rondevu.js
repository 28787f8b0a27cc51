// A small Rondevu client for browsers: publish a service with an offer pool, connect
// to one, trickle ICE both ways, send strings and bytes, reconnect (docs/live-page.md).
//
// Messages: with the session layer (docs/session-layer.md, on by default, `session:
// null` turns it off) and a peer that speaks it too, every message travels in
// numbered frames, acknowledged, retransmitted on every new data channel of the same
// session and delivered exactly once, in order; a heartbeat notices a silent peer in
// 2.5 s.  Otherwise (a plain peer, or the layer off) a message is one data-channel
// message, as every Rondevu peer sends it.  Both ends learn which from the SDP.
//
// Polling: with the server's long-poll extension, `poll` and `getIceCandidates` carry
// `waitMs` and the server holds them until there is news; otherwise they repeat at a
// plain interval.  Chromium opens at most six HTTP/1.1 connections per server, so a
// page holds at most one poll per publisher and one ICE read per connecting link.

import {
  DeliverySession,
  addSessionAttribute,
  newToken,
  readSessionAttribute,
  remoteMaxMessageSize,
  sessionConfig,
} from "./session.js";
import { Api, Identity, RpcError } from "./wire.js";

export { Api, Identity, RpcError, sessionConfig };

const PLAIN_POLL_MS = 1000;
const ICE_POLL_MS = 500;
const ICE_READ_LIMIT_MS = 30000;
const ICE_HOLD_MS = 5000;
const MAX_BUFFERED = 1000;
const CHANNEL_LABEL = "default";
const ANSWER_GATHER_MS = 250;
const OFFER_GATHER_MS = 1000;
const OPEN_TIMEOUT_MS = 20000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function candidateJson(candidate) {
  const json = candidate.toJSON();
  return {
    candidate: json.candidate,
    sdpMid: json.sdpMid ?? null,
    sdpMLineIndex: json.sdpMLineIndex ?? null,
    usernameFragment: json.usernameFragment ?? null,
  };
}

/**
 * One peer connection and its data channel, with ICE trickled through the server.
 * Events: ``state`` ({state, previous}), ``message`` ({data, text}), ``log`` ({text}).
 */
class Link extends EventTarget {
  constructor(api, iceServers, role, offerId = null) {
    super();
    this.api = api;
    this.role = role;
    this.offerId = offerId;
    this.pc = new RTCPeerConnection({ iceServers });
    this.channel = null;
    this.remoteSet = false;
    this._pendingRemote = [];
    this._pendingLocal = [];
    this._allLocal = [];
    this._seenRemote = new Set();
    this._sending = Promise.resolve();
    this._stop = new AbortController(); // ends a held candidate read at once on close
    this.ended = false;
    this.pc.onicecandidate = (event) => {
      if (event.candidate && event.candidate.candidate) this._local(candidateJson(event.candidate));
    };
  }

  _local(candidate) {
    this._allLocal.push(candidate);
    if (this.offerId === null) {
      this._pendingLocal.push(candidate);
      return;
    }
    const candidates = [candidate];
    this._sending = this._sending
      .then(() => this.api.call("addIceCandidates", { offerId: this.offerId, candidates }))
      .catch((error) => this._log(`addIceCandidates: ${error.message}`));
  }

  /** The offer id is known: send the candidates gathered so far, in one call. */
  offerKnown(offerId) {
    this.offerId = offerId;
    const candidates = this._pendingLocal.splice(0);
    this._send(offerId, candidates);
  }

  /** The offer was (re)published: a publication replaces an unanswered offer and
   * drops its candidates, so every candidate gathered so far goes again. */
  republished(offerId) {
    this.offerId = offerId;
    this._pendingLocal = [];
    this._send(offerId, this._allLocal.slice());
  }

  _send(offerId, candidates) {
    if (candidates.length === 0) return;
    this._sending = this._sending
      .then(() => this.api.call("addIceCandidates", { offerId, candidates }))
      .catch((error) => this._log(`addIceCandidates: ${error.message}`));
  }

  async remoteDescription(description) {
    await this.pc.setRemoteDescription(description);
    this.remoteSet = true;
    for (const candidate of this._pendingRemote.splice(0)) await this._apply(candidate);
  }

  /** A candidate from the other side (deduplicated: a plain server repeats them). */
  async remoteCandidate(candidate) {
    const key = JSON.stringify(candidate);
    if (this._seenRemote.has(key)) return;
    this._seenRemote.add(key);
    if (!this.remoteSet) this._pendingRemote.push(candidate);
    else await this._apply(candidate);
  }

  async _apply(candidate) {
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (error) {
      this._log(`candidate refused: ${error.message}`);
    }
  }

  /** Resolve once ICE gathering is complete, or after ``ms``. */
  gathered(ms) {
    if (this.pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.pc.addEventListener("icegatheringstatechange", () => {
        if (this.pc.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  iceDone() {
    const state = this.pc.iceConnectionState;
    return this.ended || state === "connected" || state === "completed" || state === "closed";
  }

  /** Read the other side's candidates with getIceCandidates until ICE connects. */
  async readCandidates() {
    const hold = Math.min(await this.api.longPollMs(), ICE_HOLD_MS);
    const deadline = Date.now() + ICE_READ_LIMIT_MS;
    let since = 0;
    while (!this.iceDone() && Date.now() < deadline) {
      const asked = Date.now();
      let result;
      try {
        const params = { offerId: this.offerId, since };
        if (hold > 0) params.waitMs = hold;
        result = await this.api.call("getIceCandidates", params, { signal: this._stop.signal });
      } catch (error) {
        if (this.ended) return;
        this._log(`getIceCandidates: ${error.message}`);
        await sleep(ICE_POLL_MS);
        continue;
      }
      for (const item of result.candidates) {
        await this.remoteCandidate(item.candidate);
        // Our server stamps each offer's candidates in increasing order, so a cursor
        // is safe there; a plain server's stamps can collide: read from 0 and dedupe.
        if (hold > 0) since = Math.max(since, item.createdAt);
      }
      const early = Date.now() - asked < hold / 2;
      if (hold === 0 || (result.candidates.length === 0 && early)) await sleep(ICE_POLL_MS);
    }
  }

  attach(channel) {
    this.channel = channel;
    channel.binaryType = "arraybuffer";
    let opened = false;
    const open = () => {
      if (opened) return; // announced once, however the channel came to be open
      opened = true;
      this.dispatchEvent(new CustomEvent("open"));
    };
    channel.onopen = open;
    channel.onclose = () => this.dispatchEvent(new CustomEvent("drop", { detail: "channel closed" }));
    channel.onmessage = (event) => this.dispatchEvent(new CustomEvent("data", { detail: event.data }));
    this.pc.onconnectionstatechange = () => {
      const state = this.pc.connectionState;
      this._log(`peer connection ${state}`);
      if (state === "failed") this.dispatchEvent(new CustomEvent("drop", { detail: "ICE failed" }));
    };
    if (channel.readyState === "open") queueMicrotask(open);
  }

  close() {
    this.ended = true;
    this._stop.abort();
    try {
      this.channel?.close();
    } catch {}
    this.pc.close();
  }

  _log(text) {
    this.dispatchEvent(new CustomEvent("log", { detail: text }));
  }
}

let nextId = 1;

/**
 * A connection to a peer that survives drops: the answering side finds a fresh offer
 * of the same service and connects again (``reconnect``); the publishing side's
 * connection ends with its link, unless it holds a session: then it waits
 * (``reconnecting``, up to ``resumeTimeoutMs``) for the same peer to answer a fresh
 * offer of the pool, and carries on with that link.
 * States: connecting, connected, reconnecting, closed, failed.
 * Events: ``state``, ``message`` (a string or a Uint8Array), ``log``, and with the
 * session layer ``session`` ({kind: "resumed", replayed} | {kind: "heartbeat"} |
 * {kind: "reset", unacked, resent, reason} | {kind: "acked", count} |
 * {kind: "rejected", error}) and ``undelivered`` ({messages, reason, maybeDelivered}).
 */
export class Connection extends EventTarget {
  constructor(client, { role, fqn, peer = null, reconnect = false, session = undefined }) {
    super();
    this.id = nextId++;
    this.client = client;
    this.role = role;
    this.fqn = fqn;
    this.peer = peer;
    this.reconnect = reconnect;
    this.session = sessionConfig(session); // null: plain messages only
    this.state = "connecting";
    this.link = null;
    this.offerId = null;
    this.offerIds = []; // every offer this connection's links came from
    this.attempts = 0;
    this.reconnects = 0;
    this.maxAttempts = 20;
    this._buffer = [];
    // The session layer: negotiated per link, the session itself outlives them.
    this.layered = false; // the current link carries session frames
    this.delivery = null; // the DeliverySession, once a layered link opened
    this.sessionToken = null; // the session's id (drawn by the answering side)
    this.peerToken = null; // answering side: the offering process's epoch
    this.peerLimit = null;
    this.replayed = 0; // messages sent into the session while no link was up
    this.frozen = false; // a test hook: the tab stops answering (see freeze())
    this._timer = null;
    this._resumeTimer = null;
  }

  _setState(state, why = "") {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, previous, why } }));
  }

  _log(text) {
    this.dispatchEvent(new CustomEvent("log", { detail: text }));
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Send a string or bytes (ArrayBuffer, a typed array); kept while not connected. */
  send(data) {
    if (this.state === "closed" || this.state === "failed") throw new Error("connection is closed");
    if (this.delivery !== null) {
      this.delivery.send(data, performance.now()); // throws when the window is full
      if (this.state !== "connected") this.replayed += 1;
      this._pump();
      return;
    }
    if (this.state === "connected" && this.link?.channel?.readyState === "open") {
      this.link.channel.send(data);
    } else {
      if (this._buffer.length >= MAX_BUFFERED) throw new Error("send buffer full");
      this._buffer.push(data);
    }
  }

  close() {
    if (this.state === "closed") return;
    this.link?.close();
    this._stopTimers();
    this._reportHeld("closed before delivery was confirmed");
    this._setState("closed", "closed here");
  }

  /** A test hook: the connection stops sending, reading and running its timers, as a
   * tab whose page hangs; the peer connection stays up, so only a heartbeat tells. */
  freeze() {
    this.frozen = true;
    this._stopTimers();
  }

  _stopTimers() {
    clearTimeout(this._timer);
    clearTimeout(this._resumeTimer);
    this._timer = this._resumeTimer = null;
  }

  /** Report what will not be delivered any more: the buffer and the session's window. */
  _reportHeld(reason) {
    let messages = this._buffer.splice(0);
    let maybeDelivered = false;
    if (this.delivery !== null) {
      const unacked = this.delivery.unacked();
      messages = unacked.map((u) => u.data).concat(messages);
      maybeDelivered = unacked.some((u) => u.transmitted);
      this.delivery = null;
    }
    if (messages.length) {
      this._log(`${messages.length} message(s) undelivered: ${reason}`);
      this._emit("undelivered", { messages, reason, maybeDelivered });
    }
  }

  /** Answering side: decide from a fetched offer whether the next link uses the layer,
   * and end the session when the offer comes from another process (another epoch, or
   * no attribute at all). */
  _negotiate(offerSdp) {
    const remote = this.session === null ? null : readSessionAttribute(offerSdp);
    if (this.delivery !== null && remote !== this.peerToken) {
      const reason = remote === null ? "the peer no longer speaks the session layer" : "the peer is a new process";
      const unacked = this.delivery.unacked();
      const data = unacked.map((u) => u.data);
      const resent = this.session.onPeerReset === "resend";
      this.delivery = null;
      this.sessionToken = null;
      this.replayed = 0;
      this._log(`session reset (${reason}): ${data.length} unacknowledged message(s) ${resent ? "sent again" : "dropped"}`);
      this._emit("session", { kind: "reset", unacked: data, resent, reason });
      if (resent) this._buffer.unshift(...data); // ahead of anything buffered since
      else if (data.length) {
        const maybeDelivered = unacked.some((u) => u.transmitted);
        this._emit("undelivered", { messages: data, reason, maybeDelivered });
      }
    }
    this.layered = remote !== null;
    this.peerLimit = remoteMaxMessageSize(offerSdp);
    if (remote !== null) {
      this.peerToken = remote;
      this.sessionToken ??= newToken();
    }
  }

  /** Publishing side: the link of an answered offer, and what its answer says. */
  _answeredWith(answerSdp) {
    const remote = this.session === null ? null : readSessionAttribute(answerSdp);
    this.layered = remote !== null;
    this.peerLimit = remoteMaxMessageSize(answerSdp);
    if (remote !== null) this.sessionToken = remote;
  }

  /** Publishing side: the peer of this session answered a fresh offer of the pool:
   * carry on with that offer's link (the old one, if still up, is dropped). */
  resumeWith(link, answerSdp) {
    const old = this.link;
    this._stopTimers();
    if (this.state === "connected") this._setState("reconnecting", "the peer reconnected");
    this.delivery?.channelDown();
    this._answeredWith(answerSdp);
    this.reconnects += 1;
    this._log(`resuming the session on offer ${link.offerId.slice(0, 12)}`);
    this.useLink(link);
    if (old && old !== link) old.close();
  }

  useLink(link) {
    this.link = link;
    this.offerId = link.offerId;
    if (link.offerId) this.offerIds.push(link.offerId);
    // A link whose channel never opens (ICE finds no path) counts as dropped, so the
    // answering side tries a fresh offer and the publishing side frees its slot.
    const timer = setTimeout(() => {
      if (!link.ended) link.dispatchEvent(new CustomEvent("drop", { detail: "channel did not open" }));
    }, OPEN_TIMEOUT_MS);
    link.addEventListener("log", (e) => this._log(e.detail));
    let open = false;
    const opened = () => {
      clearTimeout(timer);
      if (open || this.link !== link || this.state === "closed") return;
      open = true;
      if (this.reconnects > 0) this._log(`reconnected (${this.reconnects})`);
      this.attempts = 0;
      this._setState("connected");
      if (this.layered) this._sessionUp();
      else for (const data of this._buffer.splice(0)) link.channel.send(data);
    };
    link.addEventListener("open", opened);
    if (link.channel?.readyState === "open") opened(); // it opened before we listened
    link.addEventListener("data", (e) => {
      if (this.link !== link || this.frozen) return;
      if (this.layered && this.delivery !== null) {
        this.delivery.frame(e.detail, performance.now());
        this._pump();
        return;
      }
      const data = typeof e.detail === "string" ? e.detail : new Uint8Array(e.detail);
      this.dispatchEvent(new CustomEvent("message", { detail: data }));
    });
    link.addEventListener("drop", (e) => this._dropped(link, e.detail));
  }

  _sessionUp() {
    const now = performance.now();
    const resumed = this.delivery !== null;
    this.delivery ??= new DeliverySession(this.session, { peerLimit: this.peerLimit });
    const pending = this.delivery.unackedMessages;
    this.delivery.channelUp(now);
    // What was sent before the session existed (or queued again after a reset).
    for (const data of this._buffer.splice(0)) this.delivery.send(data, now);
    if (resumed) {
      const down = this.replayed ? ` (${this.replayed} sent while the link was down)` : "";
      this._log(`session resumed: ${pending} unacknowledged message(s) sent again${down}`);
      this._emit("session", { kind: "resumed", replayed: pending });
    } else {
      this._log(`session ${this.sessionToken.slice(0, 8)} started`);
    }
    this.replayed = 0;
    this._pump();
  }

  /** Transmit what the session produced, hand out its events, rearm its timer. */
  _pump() {
    for (;;) {
      const delivery = this.delivery;
      if (delivery === null || this.frozen) return;
      const channel = this.link?.channel;
      for (const frame of delivery.takeFrames()) {
        if (!delivery.up || channel?.readyState !== "open") continue; // resent on the next link
        try {
          channel.send(frame);
        } catch (error) {
          this._log(`send: ${error.message}`); // the channel is going: the next link resends
        }
      }
      let restarted = false;
      for (const event of delivery.takeEvents()) {
        if (event.type === "delivered") this._emit("message", event.data);
        else if (event.type === "acked") this._emit("session", { kind: "acked", count: event.count });
        else if (event.type === "rejected") {
          this._log(`session frame dropped: ${event.error}`);
          this._emit("session", { kind: "rejected", error: event.error });
        } else if (event.type === "reset") {
          this._restartSession(delivery);
          restarted = true;
          break; // the new session's output, on the next round
        } else if (event.type === "silent" && this.link !== null) {
          const ms = this.session.heartbeatTimeoutMs;
          this._log(`heartbeat: nothing heard for ${ms} ms, the link is considered lost`);
          this._emit("session", { kind: "heartbeat" });
          this._dropped(this.link, "Heartbeat timeout");
        }
      }
      if (!restarted) break;
    }
    clearTimeout(this._timer);
    this._timer = null;
    const due = this.delivery?.timer() ?? null; // _dropped may have ended the session
    if (due !== null && !this.frozen) {
      this._timer = setTimeout(() => {
        this.delivery?.onTimer(performance.now());
        this._pump();
      }, Math.max(0, due - performance.now()));
    }
  }

  /** The peer lost our session although it kept its id (its pool gave it up, or
   * started again): end ours as for a new process, go on with a new one on the same
   * link. */
  _restartSession(old) {
    const reason = "the peer lost the session";
    const unacked = old.unacked();
    const data = unacked.map((u) => u.data);
    const resent = this.session.onPeerReset === "resend";
    this._log(`session reset (${reason}): ${data.length} unacknowledged message(s) ${resent ? "sent again" : "dropped"}`);
    this._emit("session", { kind: "reset", unacked: data, resent, reason });
    const now = performance.now();
    this.delivery = new DeliverySession(this.session, { peerLimit: this.peerLimit });
    this.replayed = 0;
    if (this.link?.channel?.readyState === "open") this.delivery.channelUp(now);
    if (!resent) {
      if (data.length) {
        const maybeDelivered = unacked.some((u) => u.transmitted);
        this._emit("undelivered", { messages: data, reason, maybeDelivered });
      }
      return;
    }
    for (const item of data) this.delivery.send(item, now);
  }

  _dropped(link, why) {
    if (this.link !== link || link.ended || this.state === "closed" || this.state === "failed") return;
    link.close();
    clearTimeout(this._timer);
    this._timer = null;
    this.delivery?.channelDown();
    if (this.role === "offerer" && this.delivery !== null) {
      // The peer comes back through a fresh offer of our pool (`resumeWith`).
      this._setState("reconnecting", `${why}; waiting for the peer to resume`);
      clearTimeout(this._resumeTimer);
      this._resumeTimer = setTimeout(() => {
        if (this.state !== "reconnecting") return;
        this._reportHeld("the peer did not come back");
        this._setState("closed", "the peer did not come back");
      }, this.session.resumeTimeoutMs);
      return;
    }
    if (!this.reconnect) {
      this._reportHeld(why);
      this._setState("closed", why);
      return;
    }
    this.reconnects += 1;
    this._setState("reconnecting", why);
    this.client._answer(this);
  }
}

/** One identity on one server: connects to services and publishes them. */
export class RondevuClient extends EventTarget {
  constructor(api, { iceServers = [] } = {}) {
    super();
    this.api = api;
    this.iceServers = iceServers;
    this.connections = new Set();
    this.publishers = new Set();
  }

  static async create(baseUrl = location.origin, { username, iceServers = [] } = {}) {
    const identity = await Identity.generate(username);
    const client = new RondevuClient(new Api(baseUrl, identity), { iceServers });
    await client.api.serverInfo();
    await client.api.claim();
    return client;
  }

  get username() {
    return this.api.identity.username;
  }

  /** Connect to ``name:version@user`` (or any provider of ``name:version``).
   * ``session``: the session layer's settings over `DEFAULT_SESSION`, null for plain
   * messages only; it is used only when the offer proposes it. */
  connect(fqn, { reconnect = true, session = undefined } = {}) {
    const conn = new Connection(this, { role: "answerer", fqn, reconnect, session });
    this._track(conn);
    this._answer(conn);
    return conn;
  }

  /** Discover: the offer a connect would take now (`getService`). */
  async findService(fqn) {
    return this.api.call("getService", { serviceFqn: fqn });
  }

  async _answer(conn) {
    while (conn.state !== "closed") {
      if (conn.attempts > 0) {
        const delay = Math.min(5000, 250 * 2 ** (conn.attempts - 1));
        conn._log(`retrying in ${delay} ms`);
        await sleep(delay);
        if (conn.state === "closed") return;
      }
      conn.attempts += 1;
      if (conn.attempts > conn.maxAttempts) {
        conn._setState("failed", "no offer could be answered");
        return;
      }
      let link = null;
      try {
        const offer = await this.api.call("getService", { serviceFqn: conn.fqn });
        conn.peer = offer.username;
        conn._negotiate(offer.sdp);
        link = new Link(this.api, this.iceServers, "answerer");
        link.pc.ondatachannel = (event) => link.attach(event.channel);
        await link.remoteDescription({ type: "offer", sdp: offer.sdp });
        await link.pc.setLocalDescription(await link.pc.createAnswer());
        // Host candidates gather in a few milliseconds: waiting that long puts them in
        // the answer itself, so a publisher that reads candidates on a timer (every
        // Python and 0.18.x peer) does not wait a round for them.  Later ones trickle.
        await link.gathered(ANSWER_GATHER_MS);
        if (conn.state === "closed") {
          link.close();
          return;
        }
        let sdp = link.pc.localDescription.sdp;
        // Only the text for the server is annotated: the browser's own stays its own.
        if (conn.layered) sdp = addSessionAttribute(sdp, conn.sessionToken);
        await this.api.call("answerOffer", { serviceFqn: offer.serviceFqn, offerId: offer.offerId, sdp });
        link.offerKnown(offer.offerId);
        conn.useLink(link);
        conn._log(`answered offer ${offer.offerId.slice(0, 12)} of ${offer.username}`);
        link.readCandidates().catch((error) => conn._log(`ICE read: ${error.message}`));
        return;
      } catch (error) {
        link?.close();
        conn._log(`connect: ${error.message}`);
      }
    }
  }

  /** Keep ``poolSize`` offers of ``name:version`` published; peers arrive as
   * ``connection`` events on the returned `Publisher`.  ``session``: as for
   * `connect`; the offers propose the layer unless it is null. */
  async publish(service, { poolSize = 2, ttl = 300000, session = undefined } = {}) {
    const publisher = new Publisher(this, service, { poolSize, ttl, session });
    this.publishers.add(publisher);
    await publisher.start();
    return publisher;
  }

  _track(conn) {
    this.connections.add(conn);
    this.dispatchEvent(new CustomEvent("connection", { detail: conn }));
  }

  /** Close everything; ``leaving``: the page is going away (requests must outlive it). */
  close({ leaving = false } = {}) {
    for (const publisher of this.publishers) publisher.close({ leaving });
    for (const conn of this.connections) conn.close();
  }
}

/** A published service and its pool of unanswered offers. */
export class Publisher extends EventTarget {
  constructor(client, service, { poolSize, ttl, session }) {
    super();
    this.client = client;
    this.api = client.api;
    this.service = service;
    this.fqn = `${service}@${client.username}`;
    this.poolSize = poolSize;
    this.ttl = ttl;
    this.session = sessionConfig(session);
    // Names this publisher (this pool, this page) in its offers: a page opened again
    // draws another, which tells an answering peer that its old session is gone.
    this.epoch = this.session === null ? null : newToken();
    this.free = []; // links of unanswered offers
    this.pending = new Map(); // offerId -> link being answered or connected
    this.keepsAnswered = false;
    this.closed = false;
    this._stop = new AbortController(); // ends a held poll at once on close
    this._publishing = null;
    this._renewAt = 0;
  }

  async start() {
    await this.refill();
    this._loop().catch((error) => this._log(`poll loop ended: ${error.message}`));
  }

  _log(text) {
    this.dispatchEvent(new CustomEvent("log", { detail: text }));
  }

  async _newLink() {
    const link = new Link(this.api, this.client.iceServers, "offerer");
    link.attach(link.pc.createDataChannel(CHANNEL_LABEL));
    await link.pc.setLocalDescription(await link.pc.createOffer());
    // Published with the candidates gathered by then (host ones take milliseconds), so
    // the offer works on its own; later ones trickle.  The SDP is kept as published:
    // localDescription grows as candidates arrive, and the server names the offer by
    // the exact text it was given.
    await link.gathered(OFFER_GATHER_MS);
    link.sdp = link.pc.localDescription.sdp;
    if (this.epoch !== null) link.sdp = addSessionAttribute(link.sdp, this.epoch);
    return link;
  }

  /** Top the pool up and publish it whole (publishing replaces unanswered offers). */
  refill() {
    if (this._publishing === null) {
      this._publishing = this._refill().finally(() => {
        this._publishing = null;
      });
    }
    return this._publishing;
  }

  async _refill() {
    if (this.closed) return;
    // A server without keepsAnsweredOffers drops answered offers on republish: wait.
    if (!this.keepsAnswered && this.pending.size > 0 && this.free.length > 0) return;
    while (this.free.length < this.poolSize) this.free.push(await this._newLink());
    const offers = this.free.map((link) => ({ sdp: link.sdp }));
    const result = await this.api.call("publishService", {
      serviceFqn: this.fqn,
      offers,
      ttl: this.ttl,
    });
    this.keepsAnswered = result.keepsAnsweredOffers === true;
    const ids = new Map(result.offers.map((offer) => [offer.sdp, offer.offerId]));
    for (const link of this.free) {
      const id = ids.get(link.sdp);
      if (id) link.republished(id);
    }
    this._renewAt = Date.now() + this.ttl * 0.8;
    this.dispatchEvent(new CustomEvent("published", { detail: result }));
  }

  async _loop() {
    const hold = await this.api.longPollMs();
    let since = 0;
    let settled = true;
    const seenAnswers = new Set();
    const seenCandidates = new Set();
    while (!this.closed) {
      if (Date.now() > this._renewAt) await this.refill().catch((e) => this._log(`renew: ${e.message}`));
      const asked = Date.now();
      let result;
      try {
        const params = { since };
        // Hold only once the cursor has settled on the newest time (see below).
        if (hold > 0 && settled) params.waitMs = Math.min(hold, Math.max(1000, this._renewAt - Date.now()));
        result = await this.api.call("poll", params, { signal: this._stop.signal });
      } catch (error) {
        if (this.closed) return;
        this._log(`poll: ${error.message}`);
        await sleep(PLAIN_POLL_MS);
        continue;
      }
      let newest = since;
      let news = false;
      for (const answer of result.answers) {
        newest = Math.max(newest, answer.answeredAt);
        if (seenAnswers.has(answer.offerId)) continue;
        seenAnswers.add(answer.offerId);
        news = true;
        await this._answered(answer);
      }
      for (const [offerId, items] of Object.entries(result.iceCandidates)) {
        const link = this.pending.get(offerId);
        for (const item of items) {
          newest = Math.max(newest, item.createdAt);
          if (seenCandidates.has(item.id)) continue;
          seenCandidates.add(item.id);
          news = true;
          if (link) await link.remoteCandidate(item.candidate);
        }
      }
      // Two writes can share a millisecond: the cursor first stays 1 ms behind the
      // newest time seen (what was seen comes back, and is skipped), and moves onto
      // it once a read brings nothing new, so a held poll is never answered at once.
      if (news) {
        since = Math.max(since, newest - 1);
        settled = false;
      } else {
        since = Math.max(since, newest);
        settled = true;
      }
      const early = Date.now() - asked < hold / 2;
      if (!news && (hold === 0 || early) && settled) await sleep(PLAIN_POLL_MS);
    }
  }

  async _answered(answer) {
    const index = this.free.findIndex((link) => link.offerId === answer.offerId);
    if (index < 0) return; // an offer of an earlier pool, or of another tab
    const [link] = this.free.splice(index, 1);
    this.pending.set(answer.offerId, link);
    const resumed = this._resumable(answer);
    if (resumed !== null) {
      // The peer of a session we hold came back through a fresh offer: the same
      // connection carries on, and retransmits what the peer has not acknowledged.
      resumed.resumeWith(link, answer.sdp);
    }
    const conn = resumed ?? new Connection(this.client, {
      role: "offerer",
      fqn: this.fqn,
      peer: answer.answererId,
      session: this.session,
    });
    if (resumed === null) {
      conn._answeredWith(answer.sdp);
      conn.useLink(link);
      conn.addEventListener("state", (e) => {
        if (e.detail.state !== "closed") return;
        for (const offerId of conn.offerIds) this.pending.delete(offerId);
      });
    }
    try {
      await link.remoteDescription({ type: "answer", sdp: answer.sdp });
    } catch (error) {
      this._log(`answer refused: ${error.message}`);
    }
    if (resumed === null) {
      this.client._track(conn);
      this.dispatchEvent(new CustomEvent("connection", { detail: conn }));
    }
    this.refill().catch((error) => this._log(`refill: ${error.message}`));
  }

  /** The connection whose session ``answer`` names, if it still waits (or does not
   * know yet that its link is gone).  Only the user who answered for that session may
   * resume it: a session id seen by someone else does not hand them its messages. */
  _resumable(answer) {
    const token = this.session === null ? null : readSessionAttribute(answer.sdp);
    if (token === null) return null;
    for (const conn of this.client.connections) {
      if (conn.role !== "offerer" || conn.fqn !== this.fqn || conn.sessionToken !== token) continue;
      if (conn.peer !== answer.answererId || conn.state === "closed" || conn.state === "failed") continue;
      return conn;
    }
    return null;
  }

  /** Stop publishing: the service is deleted, its unanswered offers closed. */
  close({ leaving = false } = {}) {
    if (this.closed) return;
    this.closed = true;
    this._stop.abort();
    for (const link of this.free) link.close();
    this.free = [];
    this.api
      .call("deleteService", { serviceFqn: this.fqn }, { keepalive: leaving })
      .catch(() => {});
  }
}
