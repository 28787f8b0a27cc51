// The live page: the server's state (GET /state, read twice a second) and this tab as
// a peer that publishes or connects and chats.  Everything shown is set as text, never
// as HTML, so no name from the server can inject markup.
//
// `window.rondevuLive` gives scripts (and the tests) the same actions as the forms.

import { RondevuClient } from "./rondevu.js";

const STATE_EVERY_MS = 500;
const LOG_KEPT = 200;

const $ = (id) => document.getElementById(id);

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString();
}

function describe(data) {
  if (typeof data === "string") return data;
  const hex = Array.from(data.slice(0, 16), (b) => b.toString(16).padStart(2, "0")).join(" ");
  return `<${data.length} bytes: ${hex}${data.length > 16 ? " …" : ""}>`;
}

class LivePage {
  constructor() {
    this.client = null;
    this.statePath = null;
    this.state = null;
    this.messages = []; // {connection, direction, data}
    this.known = new Set();
    this.publishers = [];
    // The session layer for new publications and connections: undefined is its
    // defaults, null turns it off (the checkbox; scripts may set their own settings).
    this.session = undefined;
    this.undelivered = []; // {connection, messages, reason, maybeDelivered}
    this.sessionEvents = []; // {connection, kind, ...}: resumed, heartbeat, reset
  }

  async start() {
    this.client = await RondevuClient.create(location.origin);
    const info = this.client.api.info;
    const extensions = Object.keys(info.extensions ?? {});
    $("server").textContent =
      `${info.name} ${info.version} at ${location.origin}` +
      (extensions.length ? ` (extensions: ${extensions.join(", ")})` : "");
    $("me").textContent = this.client.username;
    this.statePath = info.extensions?.state?.path ?? null;
    this.client.addEventListener("connection", (e) => this._watch(e.detail));
    $("publish-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const echo = $("publish-echo").checked;
      this.publish($("publish-service").value.trim(), Number($("publish-pool").value), echo);
    });
    $("session-layer").addEventListener("change", (e) => {
      this.session = e.target.checked ? undefined : null;
    });
    $("connect-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.connect($("connect-fqn").value.trim());
    });
    $("chat-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const conn = this._byId(Number($("chat-to").value));
      const text = $("chat-text").value;
      if (!conn || !text) return;
      this.send(conn.id, $("chat-bytes").checked ? new TextEncoder().encode(text) : text);
      $("chat-text").value = "";
    });
    // Close every link when the tab goes away, so the other side knows at once.
    addEventListener("pagehide", () => this.client.close({ leaving: true }));
    this._refreshState();
    setInterval(() => this._refreshState(), STATE_EVERY_MS);
    document.body.dataset.ready = "1";
  }

  async publish(service, poolSize = 2, echo = false) {
    this.log("info", `publishing ${service} with ${poolSize} offers`);
    try {
      const publisher = await this.client.publish(service, { poolSize, session: this.session });
      publisher.addEventListener("log", (e) => this.log("info", `${publisher.fqn}: ${e.detail}`));
      publisher.addEventListener("connection", (e) => {
        if (echo) e.detail.addEventListener("message", (m) => e.detail.send(m.detail));
      });
      this.publishers.push(publisher);
      this.log("info", `published ${publisher.fqn}`);
      return publisher.fqn;
    } catch (error) {
      this.log("info", `publish failed: ${error.message}`);
      throw error;
    }
  }

  connect(fqn) {
    this.log("info", `connecting to ${fqn}`);
    return this.client.connect(fqn, { session: this.session }).id;
  }

  send(id, data) {
    const conn = this._byId(id);
    conn.send(data);
    this.messages.push({ connection: id, direction: "out", data });
    this.log("out", `to ${conn.peer ?? conn.fqn}: ${describe(data)}`);
  }

  close(id) {
    this._byId(id)?.close();
  }

  /** Tests: cut connection ``id``'s link as a dead network would, without ending its
   * session (the peer connection closes; the session waits for the next link). */
  cut(id) {
    const conn = this._byId(id);
    conn.link.pc.close();
    conn.link.dispatchEvent(new CustomEvent("drop", { detail: "link cut here" }));
  }

  /** Tests: connection ``id`` stops answering (see `Connection.freeze`). */
  freeze(id) {
    this._byId(id).freeze();
  }

  connections() {
    return [...this.client.connections].map((c) => ({
      id: c.id,
      role: c.role,
      fqn: c.fqn,
      peer: c.peer,
      state: c.state,
      offerRef: c.offerId ? c.offerId.slice(0, 12) : null,
      reconnects: c.reconnects,
      layered: c.layered,
      session: c.sessionToken,
    }));
  }

  _byId(id) {
    return [...this.client.connections].find((c) => c.id === id);
  }

  _watch(conn) {
    const who = () => conn.peer ?? conn.fqn;
    this.log("info", `connection #${conn.id} (${conn.role}) to ${who()}: ${conn.state}`);
    conn.addEventListener("state", (e) => {
      const { state, previous, why } = e.detail;
      this.log("info", `#${conn.id} ${who()}: ${previous} → ${state}${why ? ` (${why})` : ""}`);
      this._renderConnections();
    });
    conn.addEventListener("log", (e) => this.log("info", `#${conn.id}: ${e.detail}`));
    conn.addEventListener("undelivered", (e) => {
      this.undelivered.push({ connection: conn.id, ...e.detail });
    });
    conn.addEventListener("session", (e) => {
      if (e.detail.kind === "acked") return;
      this.sessionEvents.push({ connection: conn.id, ...e.detail });
      this._renderConnections();
    });
    conn.addEventListener("message", (e) => {
      this.messages.push({ connection: conn.id, direction: "in", data: e.detail });
      this.log("in", `from ${who()}: ${describe(e.detail)}`);
    });
    this._renderConnections();
  }

  _renderConnections() {
    const list = $("connections");
    const select = $("chat-to");
    const chosen = select.value;
    list.replaceChildren();
    select.replaceChildren();
    for (const c of this.connections()) {
      const li = document.createElement("li");
      li.dataset.connection = String(c.id);
      const badge = document.createElement("span");
      badge.className = `state state-${c.state}`;
      badge.textContent = c.state;
      const label = document.createElement("span");
      const via = c.role === "offerer" ? "answered my" : "to";
      label.textContent = ` #${c.id} ${c.peer ?? "?"} ${via} ${c.fqn}` +
        (c.reconnects ? `, ${c.reconnects} reconnect(s)` : "") +
        (c.session ? `, session ${c.session.slice(0, 8)}` : c.state === "connected" ? ", plain" : "");
      li.append(badge, label);
      if (c.state !== "closed" && c.state !== "failed") {
        const button = document.createElement("button");
        button.textContent = "close";
        button.addEventListener("click", () => this.close(c.id));
        li.append(" ", button);
        const option = document.createElement("option");
        option.value = String(c.id);
        option.textContent = `#${c.id} ${c.peer ?? c.fqn}`;
        select.append(option);
      }
      list.append(li);
    }
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }

  async _refreshState() {
    if (this.statePath === null) {
      $("totals").textContent = "This server does not publish its state (GET /state is off).";
      return;
    }
    try {
      const reply = await fetch(this.statePath, { cache: "no-store" });
      if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
      this.state = await reply.json();
    } catch (error) {
      $("state-age").textContent = `(unreachable: ${error.message})`;
      return;
    }
    const s = this.state;
    $("state-age").textContent = `as of ${clock(s.timestamp)}`;
    $("totals").textContent = `${s.totals.services} service(s), ${s.totals.offers} live offer(s)`;
    this._fill("services", s.services, (row) => [
      cell(row.serviceFqn),
      cell(row.username),
      cell(String(row.availableOffers)),
      cell(String(row.answeredOffers)),
      this._connectCell(row),
    ], (row) => `s:${row.serviceFqn}`, 5, "no service is published");
    this._fill("handshakes", s.handshakes, (row) => [
      cell(row.offerRef),
      cell(row.serviceFqn),
      cell(row.offerer),
      cell(row.answerer),
      cell(clock(row.answeredAt)),
    ], (row) => `h:${row.offerRef}`, 5, "no offer is answered");
  }

  _connectCell(row) {
    const td = document.createElement("td");
    if (row.username !== this.client.username && row.availableOffers > 0) {
      const button = document.createElement("button");
      button.textContent = "connect";
      button.addEventListener("click", () => this.connect(row.serviceFqn));
      td.append(button);
    }
    return td;
  }

  _fill(id, rows, cells, key, width, empty) {
    const body = $(id).querySelector("tbody");
    body.replaceChildren();
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = cell(empty, "empty");
      td.colSpan = width;
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const row of rows) {
      const tr = document.createElement("tr");
      tr.dataset.key = key(row);
      if (!this.known.has(tr.dataset.key)) {
        this.known.add(tr.dataset.key);
        tr.className = "fresh";
      }
      tr.append(...cells(row));
      body.append(tr);
    }
  }

  log(kind, text) {
    const li = document.createElement("li");
    li.className = kind;
    li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
    const log = $("log");
    log.append(li);
    while (log.children.length > LOG_KEPT) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;
  }
}

const page = new LivePage();
window.rondevuLive = page;
page.start().catch((error) => {
  $("server").textContent = `could not start: ${error.message}`;
  document.body.dataset.ready = "error";
});
