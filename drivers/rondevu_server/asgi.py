"""The HTTP face of the server: a raw ASGI app over `RondevuServer` (docs/protocol.md §2).

Routes: ``GET /`` (name and version, and our extensions when any is on), ``GET /health``,
``POST /rpc``, ``OPTIONS`` on any path (CORS preflight, 204), and 404 with the
original's JSON body for anything else.  Ours, each switched off by a setting:
``GET /state`` (a bounded, read-only overview of the live state, docs/protocol.md §13:
`StateView`) and the browser client's static files under ``/web/``
(`rondevu_server.static`).
Every JSON response is compact with ``vary: Origin`` and the CORS headers of §2.

No framework: the app reads the body itself so it can stop at ``max_body_bytes`` (413)
without buffering more, and it owns the server's lifetime through the ASGI lifespan
protocol (storage opened and cleanup started at startup, both closed at shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from rondevu_schemas.http import NOT_FOUND_ERROR, SERVER_DESCRIPTION, SERVER_NAME
from rondevu_server.config import ServerConfig
from rondevu_server.messages import RATE_LIMITED
from rondevu_server.server import RondevuServer, dumps, system_clock
from rondevu_server.static import PREFIX as WEB_PREFIX
from rondevu_server.static import WebFiles

__all__ = [
    "STATE_DEFAULT_LIMIT",
    "STATE_MAX_LIMIT",
    "STATE_MAX_OFFSET",
    "STATE_PATH",
    "STATE_REFRESH_MS",
    "RondevuApp",
    "StateView",
    "redact_db_url",
    "server_info",
]

STATE_PATH = "/state"
STATE_DEFAULT_LIMIT = 50
STATE_MAX_LIMIT = 100
"""Largest page of ``GET /state`` (services, and answered offers, each)."""
STATE_MAX_OFFSET = 1_000
"""Deepest ``offset``: like discovery, only the newest rows are ever paged through."""
STATE_REFRESH_MS = 250
"""A page of ``GET /state`` is read from the database at most this often; viewers in
between share the last reading, so many open pages cost the database no more."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Header = tuple[bytes, bytes]

log = logging.getLogger("rondevu_server")

_JSON: Header = (b"content-type", b"application/json")
_VARY: Header = (b"vary", b"Origin")
_EXPOSE: Header = (b"access-control-expose-headers", b"Content-Type")
_PREFLIGHT: tuple[Header, ...] = (
    (b"access-control-max-age", b"86400"),
    (b"access-control-allow-methods", b"GET,POST,OPTIONS"),
    (b"access-control-allow-headers", b"Content-Type,Origin"),
    (b"vary", b"Origin, Access-Control-Request-Headers"),
)


class RondevuApp:
    """ASGI 3 application serving the Rondevu 0.5.4 wire protocol.

    Give it a ready `RondevuServer` (then the caller owns its lifetime), or only a
    config, and the app opens the server at lifespan startup and closes it at shutdown.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        server: RondevuServer | None = None,
        clock: Callable[[], int] = system_clock,
    ) -> None:
        self.config = config
        self.server = server
        self._owns_server = server is None
        self._clock = clock
        self._any_origin = "*" in config.cors_origins
        self._origins = tuple(o.encode("latin-1") for o in config.cors_origins)
        self._info = dumps(server_info(config))
        self._web = WebFiles.load() if config.web_client else None
        self._state = StateView(clock) if config.public_state else None

    def release_waiters(self) -> None:
        """Answer every held call now (see `RondevuServer.release_waiters`): ``rondevu
        serve`` calls it when told to stop, before uvicorn waits for open requests."""
        if self.server is not None:
            self.server.release_waiters()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.server is None:
                        self.server = await RondevuServer.open(self.config, clock=self._clock)
                    self.server.start_cleanup()
                except Exception as error:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                log.info("started", extra={"db": redact_db_url(self.config.db)})
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.server is not None and self._owns_server:
                    await self.server.aclose()
                    self.server = None
                log.info("stopped")
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _allow_origin(self, headers: list[Header]) -> bytes | None:
        origin = next((value for name, value in headers if name == b"origin"), None)
        if self._any_origin:
            return origin
        if origin is not None and origin in self._origins:
            return origin
        return self._origins[0] if self._origins else None

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: list[Header] = scope["headers"]
        origin = self._allow_origin(headers)
        cors: list[Header] = [] if origin is None else [(b"access-control-allow-origin", origin)]
        method, path = scope["method"], scope["path"]
        if method == "OPTIONS":
            await send(
                {"type": "http.response.start", "status": 204, "headers": [*cors, *_PREFLIGHT]}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        web = self._web is not None and method in ("GET", "HEAD") and path.startswith("/web")
        if web and await self._static(method, path, headers, send):
            return
        reply = await self._route(method, path, scope, receive)
        if reply is None:  # the client left mid-request: nobody to answer
            return
        status, body = reply
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", b"%d" % len(body)), *cors, _EXPOSE, _VARY],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _route(
        self, method: str, path: str, scope: Scope, receive: Receive
    ) -> tuple[int, bytes] | None:
        server = self.server
        if method == "POST" and path == "/rpc" and server is not None:
            body = await self._read_body(server, scope, receive)
            if body is None or isinstance(body, tuple):  # gone, or the server's 413 reply
                return body
            return await server.handle_rpc_body(
                body, self._client_key(scope), disconnected=lambda: _disconnect(receive)
            )
        if method == "GET" and path == "/":
            return 200, self._info
        if method == "GET" and path == STATE_PATH and self._state is not None and server:
            if server.is_rate_limited(self._client_key(scope), self._clock()):
                return 429, dumps({"success": False, "error": RATE_LIMITED})
            return await self._state.reply(server, scope.get("query_string", b""))
        if method == "GET" and path == "/health":
            health = {"status": "ok", "timestamp": self._clock(), "version": self.config.version}
            return 200, dumps(health)
        return 404, dumps({"error": NOT_FOUND_ERROR})

    async def _static(self, method: str, path: str, headers: list[Header], send: Send) -> bool:
        """Answer with a file of the browser client (304 when the browser's copy is
        current), or redirect ``/web`` to ``/web/``; False: no such file (the caller's
        404)."""
        assert self._web is not None
        found = self._web.get(path)
        if found is None:
            if path != WEB_PREFIX.rstrip("/"):
                return False
            location = (b"location", WEB_PREFIX.encode())
            start = {"status": 308, "headers": [location, (b"content-length", b"0")]}
            await send({"type": "http.response.start", **start})
            await send({"type": "http.response.body", "body": b""})
            return True
        known = next((value for name, value in headers if name == b"if-none-match"), None)
        if known is not None and found.etag in (tag.strip() for tag in known.split(b",")):
            await send({"type": "http.response.start", "status": 304, "headers": found.headers()})
            await send({"type": "http.response.body", "body": b""})
            return True
        length = (b"content-length", b"%d" % len(found.body))
        start = {"status": 200, "headers": [*found.headers(), length]}
        await send({"type": "http.response.start", **start})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else found.body})
        return True

    async def _read_body(
        self, server: RondevuServer, scope: Scope, receive: Receive
    ) -> bytes | tuple[int, bytes] | None:
        """The whole request body, or the server's 413 reply as soon as the declared or
        received length is over the limit (`RondevuServer.oversized_reply`), or None when
        the connection closed first (the client left, or the request timed out): then
        the call is not run, nor counted by the rate limit."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    break
                refused = server.oversized_reply(declared)
                if refused is not None:
                    return refused
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                return None
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            refused = server.oversized_reply(size)
            if refused is not None:
                return refused
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _client_key(self, scope: Scope) -> str | None:
        """The address the rate limit counts against.

        Behind a trusted proxy (``trust_forwarded_for``) that is the LAST X-Forwarded-For
        entry: the proxy appends the address it saw, while every entry before it came
        from the client and can say anything (``127.0.0.1`` would buy the loopback
        exemption).  Several X-Forwarded-For lines read as one list, in order.
        """
        if self.config.trust_forwarded_for:
            forwarded = None
            for name, value in scope["headers"]:
                if name == b"x-forwarded-for":
                    forwarded = value
            if forwarded is not None:
                last = forwarded.rsplit(b",", 1)[-1].strip()
                if last:
                    return str(last.decode("latin-1"))
        client = scope.get("client")
        return str(client[0]) if client else None


async def _disconnect(receive: Receive) -> None:
    """Return once the client has closed the connection.  Only asked while a call is
    held, after the whole body was read: the next message is then the disconnect."""
    while (await receive())["type"] != "http.disconnect":
        pass


class StateView:
    """``GET /state``: one bounded page of `Storage.overview`, as compact JSON.

    Query: ``limit`` (1..`STATE_MAX_LIMIT`, default `STATE_DEFAULT_LIMIT`) and
    ``offset`` (0..`STATE_MAX_OFFSET`); anything unreadable takes the default.  Each
    distinct page is read at most every `STATE_REFRESH_MS` (concurrent viewers wait on
    the same reading).  The body has names, times and counts only.
    """

    def __init__(self, clock: Callable[[], int]) -> None:
        self._clock = clock
        self._pages: dict[tuple[int, int], tuple[int, bytes]] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def page(query: bytes) -> tuple[int, int]:
        """``(limit, offset)`` from a query string, clamped."""
        try:
            fields = urllib.parse.parse_qs(query.decode("latin-1")[:256], max_num_fields=4)
        except ValueError:  # more fields than that: not a query of ours
            fields = {}

        def number(name: str, default: int, low: int, high: int) -> int:
            try:
                return max(low, min(high, int(fields[name][0])))
            except (KeyError, ValueError):
                return default

        limit = number("limit", STATE_DEFAULT_LIMIT, 1, STATE_MAX_LIMIT)
        return limit, number("offset", 0, 0, STATE_MAX_OFFSET)

    async def reply(self, server: RondevuServer, query: bytes) -> tuple[int, bytes]:
        """The status and body for one request."""
        key = self.page(query)
        async with self._lock:
            now = self._clock()
            cached = self._pages.get(key)
            if cached is not None and 0 <= now - cached[0] < STATE_REFRESH_MS:
                return 200, cached[1]
            try:
                view = await server.storage.overview(key[0], key[1], now)
            except Exception:
                log.exception("state overview failed")
                return 500, dumps({"success": False, "error": "Internal server error"})
            body = dumps(
                {
                    "timestamp": now,
                    "limit": key[0],
                    "offset": key[1],
                    "totals": {"services": view.total_services, "offers": view.total_offers},
                    "services": [
                        {
                            "serviceFqn": s.service_fqn,
                            "username": s.username,
                            "createdAt": s.created_at,
                            "expiresAt": s.expires_at,
                            "availableOffers": s.available_offers,
                            "answeredOffers": s.answered_offers,
                        }
                        for s in view.services
                    ],
                    "handshakes": [
                        {
                            "offerRef": h.offer_ref,
                            "serviceFqn": h.service_fqn,
                            "offerer": h.offerer,
                            "answerer": h.answerer,
                            "answeredAt": h.answered_at,
                            "expiresAt": h.expires_at,
                        }
                        for h in view.handshakes
                    ],
                }
            )
            if len(self._pages) >= 16:  # a few pages are looked at; forget the rest
                self._pages.clear()
            self._pages[key] = (now, body)
            return 200, body


def server_info(config: ServerConfig) -> dict[str, Any]:
    """The ``GET /`` body: the 0.5.4 fields, then ``extensions`` (ours) when one is on.

    ``extensions`` maps each extension a client may use to its parameters; a client of
    0.18.x ignores the key, and a server with every extension off sends none of it.
    """
    info: dict[str, Any] = {
        "version": config.version,
        "name": SERVER_NAME,
        "description": SERVER_DESCRIPTION,
    }
    extensions: dict[str, Any] = {}
    if config.long_poll_max_wait_ms > 0:
        extensions["longPoll"] = {"maxWaitMs": config.long_poll_max_wait_ms}
    if config.public_state:
        extensions["state"] = {"path": STATE_PATH, "maxLimit": STATE_MAX_LIMIT}
    if extensions:
        info["extensions"] = extensions
    return info


def redact_db_url(url: str) -> str:
    """A database URL without its password, for logs and error lines."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
