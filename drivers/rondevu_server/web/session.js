// The session layer in the browser (docs/session-layer.md): exactly-once, in-order
// delivery over a sequence of data channels, a heartbeat, chunking, and the SDP
// attribute both ends agree on it with.  The same rules as the Python core
// (rondevu_core/delivery/), so a page and a Python peer speak it to each other.
//
// `DeliverySession` holds no channel and reads no clock: the connection feeds it
// `channelUp(now)`, `channelDown()`, `frame(bytes, now)`, `send(data, now)` and runs
// `timer()` / `onTimer(now)`; it answers with frames to transmit (`takeFrames()`) and
// events (`takeEvents()`): {type: "delivered", data}, {type: "acked", count},
// {type: "silent"}, {type: "rejected", error}, {type: "reset"} (the peer's HELLO shows
// it lost this session: the owner starts a new one; this machine is finished).

export const ATTRIBUTE = "x-rondevu-session";
const VERSION = 1;
const TOKEN = /^[0-9A-Za-z_-]{1,64}$/;
const LINE = new RegExp(`^a=${ATTRIBUTE}:(\\d+) (\\S+)\\s*$`, "m");

const KIND_DATA = 1;
const KIND_ACK = 2;
const KIND_HELLO = 3;
const FLAG_TEXT = 0x01;
const FLAG_MORE = 0x02;
export const DATA_HEADER_SIZE = 18;
const ACK_SIZE = 9;
const HELLO_SIZE = 25;
const DEFAULT_MAX_MESSAGE_SIZE = 65536;

/** The Python side's defaults (`SessionConfig`), so both ends time out alike. */
export const DEFAULT_SESSION = Object.freeze({
  heartbeatIntervalMs: 1000,
  heartbeatTimeoutMs: 2500,
  ackDelayMs: 20,
  ackEvery: 32,
  windowMessages: 4096,
  windowBytes: 16 * 1024 * 1024,
  maxFrameBytes: 262144,
  maxMessageBytes: 16 * 1024 * 1024,
  onPeerReset: "resend", // or "drop"
  resumeTimeoutMs: 60000,
});

/** ``options`` over the defaults; null (or false) turns the layer off. */
export function sessionConfig(options) {
  if (options === null || options === false) return null;
  const config = { ...DEFAULT_SESSION, ...(options === true || options === undefined ? {} : options) };
  for (const [name, value] of Object.entries(config)) {
    if (name !== "onPeerReset" && !(Number.isFinite(value) && value > 0)) {
      throw new Error(`${name} must be a number > 0`);
    }
  }
  if (config.onPeerReset !== "resend" && config.onPeerReset !== "drop") {
    throw new Error("onPeerReset must be 'resend' or 'drop'");
  }
  if (config.heartbeatTimeoutMs <= config.heartbeatIntervalMs) {
    throw new Error("heartbeatTimeoutMs must exceed heartbeatIntervalMs");
  }
  if (config.maxFrameBytes <= DATA_HEADER_SIZE) throw new Error("maxFrameBytes is too small");
  return Object.freeze(config);
}

/** A fresh id of 26 hex digits (104 bits), as the Python side draws its own. */
export function newToken() {
  const bytes = crypto.getRandomValues(new Uint8Array(13));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// -- negotiation ------------------------------------------------------------------------

/** ``sdp`` with the session attribute, right before the first media section. */
export function addSessionAttribute(sdp, token) {
  if (!TOKEN.test(token)) throw new Error("session token must be 1-64 characters of [0-9A-Za-z_-]");
  const newline = sdp.includes("\r\n") ? "\r\n" : "\n";
  const at = sdp.indexOf(`${newline}m=`);
  if (at < 0) return sdp;
  return `${sdp.slice(0, at)}${newline}a=${ATTRIBUTE}:${VERSION} ${token}${sdp.slice(at)}`;
}

/** The token of the attribute in the session-level part of ``sdp``, or null. */
export function readSessionAttribute(sdp) {
  const head = sdp.split(/\r?\nm=/, 1)[0];
  const match = LINE.exec(head);
  if (match === null) return null;
  const [, version, token] = match;
  if (Number(version) !== VERSION || !TOKEN.test(token)) return null;
  return token;
}

/** The largest message the peer of ``sdp`` accepts: 64 KiB when it says nothing,
 * null when it announces 0 (no limit). */
export function remoteMaxMessageSize(sdp) {
  const match = /^a=max-message-size:(\d{1,12})\s*$/m.exec(sdp);
  if (match === null) return DEFAULT_MAX_MESSAGE_SIZE;
  const size = Number(match[1]);
  return size === 0 ? null : size;
}

// -- frames -----------------------------------------------------------------------------

function encodeData(seq, ack, text, more, payload) {
  const frame = new Uint8Array(DATA_HEADER_SIZE + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint8(0, KIND_DATA);
  view.setUint8(1, (text ? FLAG_TEXT : 0) | (more ? FLAG_MORE : 0));
  view.setBigUint64(2, BigInt(seq));
  view.setBigUint64(10, BigInt(ack));
  frame.set(payload, DATA_HEADER_SIZE);
  return frame;
}

function encodeAck(ack) {
  const frame = new Uint8Array(ACK_SIZE);
  const view = new DataView(frame.buffer);
  view.setUint8(0, KIND_ACK);
  view.setBigUint64(1, BigInt(ack));
  return frame;
}

function encodeHello(ack, base, sent) {
  const frame = new Uint8Array(HELLO_SIZE);
  const view = new DataView(frame.buffer);
  view.setUint8(0, KIND_HELLO);
  view.setBigUint64(1, BigInt(ack));
  view.setBigUint64(9, BigInt(base));
  view.setBigUint64(17, BigInt(sent));
  return frame;
}

class FrameError extends Error {}

// A u64 beyond what a Number holds exactly can only be a lie (nobody sends 2^53
// frames): it decodes as Infinity and is refused as never sent / out of sequence.
function u64(view, at) {
  const value = view.getBigUint64(at);
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(value);
}

export function decodeFrame(bytes) {
  if (bytes.length === 0) throw new FrameError("empty session frame");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kind = bytes[0];
  if (kind === KIND_DATA) {
    if (bytes.length < DATA_HEADER_SIZE) throw new FrameError("short DATA frame");
    const flags = bytes[1];
    if (flags & ~(FLAG_TEXT | FLAG_MORE)) throw new FrameError("unknown DATA frame flags");
    return {
      kind: "data",
      seq: u64(view, 2),
      ack: u64(view, 10),
      text: Boolean(flags & FLAG_TEXT),
      more: Boolean(flags & FLAG_MORE),
      payload: bytes.subarray(DATA_HEADER_SIZE),
    };
  }
  if (kind === KIND_ACK) {
    if (bytes.length !== ACK_SIZE) throw new FrameError("ACK frame of the wrong size");
    return { kind: "ack", ack: u64(view, 1) };
  }
  if (kind === KIND_HELLO) {
    if (bytes.length !== HELLO_SIZE) throw new FrameError("HELLO frame of the wrong size");
    return { kind: "hello", ack: u64(view, 1), base: u64(view, 9), sent: u64(view, 17) };
  }
  throw new FrameError("unknown session frame kind");
}

// -- the machine ------------------------------------------------------------------------

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** Both directions of one session (the Python core's `DeliverySession`). */
export class DeliverySession {
  constructor(config, { peerLimit = null } = {}) {
    this.config = config;
    const frame = peerLimit === null ? config.maxFrameBytes : Math.min(config.maxFrameBytes, peerLimit);
    if (frame <= DATA_HEADER_SIZE) throw new Error(`the peer accepts messages of ${frame} bytes`);
    this._chunk = frame - DATA_HEADER_SIZE;
    this._frames = [];
    this._events = [];
    // Sending side: {first, raw, frames, text}, oldest first.
    this._unacked = [];
    this._windowBytes = 0;
    this._nextSeq = 0;
    this._peerAck = 0;
    this._transmitted = 0; // every seq below went out at least once
    // Receiving side.
    this._expected = 0;
    this._ackSent = 0;
    this._ackDue = null;
    this._partial = [];
    this._partialSize = 0;
    this._partialText = false;
    // The peer lost the session (a "reset" event): this machine is finished.
    this._dead = false;
    // The peer's HELLO does not fit our state (see _onHello): it holds an older session
    // with our end, which it ends on our HELLO; until it says hello again, its frames
    // belong to that session and are ignored.
    this._estranged = false;
    // The current channel.
    this.up = false;
    this._lastRx = 0;
    this._lastTx = 0;
  }

  get unackedMessages() {
    return this._unacked.length;
  }

  hasRoom(size) {
    if (this._unacked.length >= this.config.windowMessages) return false;
    return this._unacked.length === 0 || this._windowBytes + size <= this.config.windowBytes;
  }

  /** What the peer has not acknowledged, oldest first: {data, transmitted}. */
  unacked() {
    return this._unacked.map((m) => ({ data: messageData(m), transmitted: m.first < this._transmitted }));
  }

  takeFrames() {
    return this._frames.splice(0);
  }

  takeEvents() {
    return this._events.splice(0);
  }

  send(data, now) {
    const text = typeof data === "string";
    const raw = text ? encoder.encode(data) : bytesOf(data).slice(); // ours: the caller may reuse it
    if (raw.length > this.config.maxMessageBytes) {
      throw new Error(`message of ${raw.length} bytes exceeds maxMessageBytes (${this.config.maxMessageBytes})`);
    }
    if (!this.hasRoom(raw.length)) {
      throw new Error(`send window full (${this._unacked.length} messages unacknowledged)`);
    }
    const frames = Math.max(1, Math.ceil(raw.length / this._chunk));
    const message = { first: this._nextSeq, raw, frames, text };
    this._unacked.push(message);
    this._windowBytes += raw.length;
    this._nextSeq += frames;
    if (this.up) this._transmitMessage(message, message.first, now);
  }

  channelUp(now) {
    this.up = true;
    this._lastRx = now;
    this._lastTx = now;
    // Where we stand first, so the peer can tell whether either side lost anything.
    this._frames.push(encodeHello(this._expected, this._peerAck, this._nextSeq));
    this._ackSent = this._expected;
    this._ackDue = null;
    for (const message of this._unacked) {
      const last = message.first + message.frames - 1;
      if (last >= this._peerAck) this._transmitMessage(message, Math.max(this._peerAck, message.first), now);
    }
  }

  channelDown() {
    this.up = false;
    this._ackDue = null;
  }

  timer() {
    if (!this.up) return null;
    const due = Math.min(
      this._lastTx + this.config.heartbeatIntervalMs,
      this._lastRx + this.config.heartbeatTimeoutMs,
    );
    return this._ackDue === null ? due : Math.min(due, this._ackDue);
  }

  onTimer(now) {
    if (!this.up) return;
    if (now >= this._lastRx + this.config.heartbeatTimeoutMs) {
      this.up = false;
      this._ackDue = null;
      this._events.push({ type: "silent" });
      return;
    }
    const ackDue = this._ackDue !== null && now >= this._ackDue;
    if (ackDue || now >= this._lastTx + this.config.heartbeatIntervalMs) this._sendAck(now);
  }

  frame(data, now) {
    this._lastRx = now;
    if (this._dead) return;
    if (typeof data === "string") {
      this._reject("text message on a session channel");
      return;
    }
    let frame;
    try {
      frame = decodeFrame(bytesOf(data));
    } catch (error) {
      this._reject(error.message);
      return;
    }
    if (frame.kind === "hello") {
      this._onHello(frame);
      return;
    }
    if (this._estranged) return;
    this._onAck(frame.ack);
    if (frame.kind === "ack") return;
    if (frame.seq < this._expected) {
      this._oweAck(now, false); // a retransmission: our acknowledgement was lost
      return;
    }
    if (frame.seq > this._expected) {
      this._reject("frame out of sequence");
      return;
    }
    this._expected += 1;
    if (this._partial.length && frame.text !== this._partialText) {
      this._reject("chunks of one message disagree on its type");
      this._dropPartial();
    } else if (this._partialSize + frame.payload.length > this.config.maxMessageBytes) {
      this._reject("reassembled message exceeds maxMessageBytes");
      this._dropPartial();
    } else {
      this._partial.push(frame.payload.slice());
      this._partialSize += frame.payload.length;
      this._partialText = frame.text;
      if (!frame.more) this._deliver();
    }
    this._oweAck(now, this._expected - this._ackSent >= this.config.ackEvery);
  }

  _onHello(hello) {
    if (hello.ack > this._nextSeq || hello.base > this._expected) {
      // It acknowledges frames we never numbered, or believes we have frames we do
      // not: its session is with an earlier incarnation of our end.
      this._estranged = true;
      return;
    }
    if (hello.sent < this._expected || hello.ack < this._peerAck) {
      this._dead = true; // it starts from nothing: our session is over
      this._events.push({ type: "reset" });
      return;
    }
    this._estranged = false;
    this._onAck(hello.ack);
  }

  _transmitMessage(message, start, now) {
    const ack = this._expected;
    const last = message.first + message.frames - 1;
    for (let seq = start; seq <= last; seq++) {
      const offset = (seq - message.first) * this._chunk;
      const payload = message.raw.subarray(offset, offset + this._chunk);
      this._frames.push(encodeData(seq, ack, message.text, seq !== last, payload));
    }
    this._transmitted = Math.max(this._transmitted, last + 1);
    this._ackSent = ack;
    this._ackDue = null;
    this._lastTx = now;
  }

  _sendAck(now) {
    this._frames.push(encodeAck(this._expected));
    this._ackSent = this._expected;
    this._ackDue = null;
    this._lastTx = now;
  }

  _onAck(ack) {
    if (ack > this._nextSeq) {
      this._reject("acknowledgement of a frame never sent");
      return;
    }
    if (ack <= this._peerAck) return;
    this._peerAck = ack;
    let freed = 0;
    while (this._unacked.length && this._unacked[0].first + this._unacked[0].frames - 1 < ack) {
      const message = this._unacked.shift();
      this._windowBytes -= message.raw.length;
      freed += 1;
    }
    if (freed) this._events.push({ type: "acked", count: freed });
  }

  _reject(text) {
    this._events.push({ type: "rejected", error: text });
  }

  _dropPartial() {
    this._partial = [];
    this._partialSize = 0;
  }

  _deliver() {
    const raw = concat(this._partial, this._partialSize);
    const text = this._partialText;
    this._dropPartial();
    if (!text) {
      this._events.push({ type: "delivered", data: raw });
      return;
    }
    try {
      this._events.push({ type: "delivered", data: strictDecoder.decode(raw) });
    } catch {
      this._reject("text message that is not UTF-8");
    }
  }

  _oweAck(now, urgent) {
    if (!this.up) return; // the next channelUp acknowledges everything
    if (urgent) this._sendAck(now);
    else if (this._ackDue === null) this._ackDue = now + this.config.ackDelayMs;
  }
}

function messageData(message) {
  return message.text ? new TextDecoder().decode(message.raw) : message.raw.slice();
}

function bytesOf(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new Error("send: a string, an ArrayBuffer or a typed array");
}

function concat(parts, size) {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
