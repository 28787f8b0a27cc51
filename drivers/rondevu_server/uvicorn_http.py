"""uvicorn's httptools protocol, with each response sent in one socket write.

uvicorn writes the status line and headers when the app sends ``http.response.start``
and the body when it sends ``http.response.body``: two ``send()`` system calls and, on
a loopback or LAN link, two TCP segments for every small JSON reply.  Measured with
bench/server_bench.py, those writes were the largest single cost of a request.

`CoalescingHttpProtocol` hands uvicorn a transport whose writes are collected and sent
together: at the end of the response (uvicorn's ``on_response_complete`` hook), before
a close, or at the latest on the next turn of the event loop (so a ``100 Continue`` or
any other write outside a response is delayed by one loop turn, never held).  Nothing
else changes: same parser, same flow control, same keep-alive and shutdown handling.

It also bounds what one client can make the server hold (uvicorn's httptools protocol
has neither bound; `CoalescingHttpProtocol.for_config` takes them from `ServerConfig`):

* ``max_header_bytes``: a request line plus headers (or a chunked body's trailers)
  larger than this gets ``431`` and the connection is closed.  The parser is only ever
  fed what still fits, so at most that much is buffered.  One approximation: when a
  pipelining client's next request starts inside the same socket read as the end of the
  previous one, that read's share of the new head is not counted, so such a head can
  reach the limit plus one read (at most 256 KiB) before it is refused.  A pipelined
  request waiting behind a slow reply also counts that wait against its time below.
* ``request_timeout``: a request must arrive whole (head and body) within this many
  seconds of its first byte, else the connection is closed, after a ``408`` when nothing
  is owed to the client yet; a new connection that sends no byte for this long is closed
  without a reply.  Idle time between requests on a kept-alive connection is uvicorn's
  ``timeout_keep_alive``; time the app spends answering is not counted.

* ``max_connections_per_client``: a connection from an address that already holds that
  many is closed at once, before any byte is read (loopback and proxied deployments are
  exempt, see `ServerConfig`).

0 disables each bound.  Both replies are JSON like the app's own errors and carry
``connection: close``; when a reply to an earlier request is still pending (pipelining),
the connection is closed without one, so that no client reads a reply meant for another
request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from rondevu_server.config import LOOPBACK_PREFIXES, ServerConfig

__all__ = ["CoalescingHttpProtocol"]

log = logging.getLogger("rondevu_server")

HEADERS_TOO_LARGE = "Request headers too large (max {limit} bytes)"
REQUEST_TIMEOUT = "Request not received in time (max {seconds:g} seconds)"

# Event loop timers may fire this much (a clock tick) before their due time.
_TIMER_SLACK = 0.002


def _refusal(status: int, reason: bytes, message: str) -> bytes:
    """A whole ``connection: close`` response with the app's JSON error body."""
    body = json.dumps({"success": False, "error": message}, separators=(",", ":")).encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
    )


class _CoalescingTransport:
    """A transport proxy whose ``write`` calls go out together on `flush`."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        pending = self._pending
        if pending:
            self._pending = []
            if not self._transport.is_closing():
                self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` sending each response with one write, with bounded request
    heads and request time (pass ``CoalescingHttpProtocol.for_config(config)`` as
    ``http=``; the class itself applies `ServerConfig`'s defaults)."""

    server_config: ClassVar[ServerConfig] = ServerConfig()
    open_per_client: ClassVar[dict[str, int]] = {}
    """Open connections per client address, for one server (each `for_config` class has
    its own; only its event loop touches it)."""

    # Per connection, set in connection_made.  The head counter runs while a request
    # head (or a chunked body's trailer section) may be arriving, and counts the bytes
    # of every socket read that began in that state.
    _max_head: int
    _head_open: bool
    _head_bytes: int
    _in_body: bool
    _timeout: float
    _fresh: bool  # not a byte received yet
    _started: float | None  # loop time of the current request's first byte
    _deadline: asyncio.TimerHandle | None

    @classmethod
    def for_config(cls, config: ServerConfig) -> type[CoalescingHttpProtocol]:
        """A subclass of ``cls`` enforcing ``config``'s ``max_header_bytes`` and
        ``request_timeout`` (uvicorn builds its protocols from a class, with no room
        for settings of ours, so they travel as a class attribute)."""
        attributes = {"server_config": config, "open_per_client": {}}
        return cast("type[CoalescingHttpProtocol]", type(cls.__name__, (cls,), attributes))

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Wrap the connection's transport before uvicorn sees it; start the clock on
        the first request."""
        self._client: str | None = self._counted_client(transport)
        wrapped: Any = _CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)
        config = self.server_config
        self._max_head = config.max_header_bytes if config.max_header_bytes > 0 else sys.maxsize
        self._timeout = config.request_timeout
        self._head_open = True
        self._head_bytes = 0
        self._in_body = False
        self._fresh = True
        self._started = None
        self._deadline = None
        self._arm(self._timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the request clock with the connection (no timer outlives it)."""
        self._disarm()
        self._uncount()
        super().connection_lost(exc)

    def _counted_client(self, transport: asyncio.Transport) -> str | None:
        """Count this connection against its address; close it when that address
        already holds ``max_connections_per_client``.  The counted key, or None."""
        config = self.server_config
        limit = config.max_connections_per_client
        if limit <= 0 or config.trust_forwarded_for:
            return None
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else None
        if address is None:
            return None
        if not config.rate_limit_loopback and address.startswith(LOOPBACK_PREFIXES):
            return None
        open_now = self.open_per_client.get(address, 0)
        if open_now >= limit:
            log.debug("connection refused", extra={"reason": "per-client connection limit"})
            transport.close()
            return None
        self.open_per_client[address] = open_now + 1
        return address

    def _uncount(self) -> None:
        address, self._client = self._client, None
        if address is not None:
            left = self.open_per_client.get(address, 1) - 1
            if left > 0:
                self.open_per_client[address] = left
            else:
                self.open_per_client.pop(address, None)

    def data_received(self, data: bytes) -> None:
        """Feed the parser no more head than ``max_header_bytes`` allows."""
        self._fresh = False
        if self._started is None:  # even bytes before a request line (CRLF) start one
            self._start()
        while self._head_open:
            room = self._max_head - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                super().data_received(data)
                if self._head_open and self._head_bytes >= self._max_head:
                    self._refuse_head()  # full, and the head still needs more
                return
            # Only what still fits: past it, the same head open means it is too large.
            self._head_bytes = self._max_head
            super().data_received(data[:room])
            if self.transport.is_closing():
                return
            if self._head_open and self._head_bytes >= self._max_head:
                self._refuse_head()
                return
            data = data[room:]
        super().data_received(data)

    def on_message_begin(self) -> None:
        """A request starts: its clock runs until it has fully arrived."""
        if self._started is None:  # pipelined: it began inside the previous one's read
            self._start()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        """The head is whole: stop counting it."""
        self._head_open = False
        self._in_body = True
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        """A chunk size line: the last one (0) is followed by trailers, which the
        parser buffers like headers, so count again until body bytes show up."""
        self._head_open = True
        self._head_bytes = 0

    def on_body(self, body: bytes) -> None:
        """Body bytes: not a trailer section, so nothing to count."""
        self._head_open = False
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The request has fully arrived: stop its clock, count the next head afresh."""
        self._started = None
        self._head_open = True
        self._head_bytes = 0
        self._in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Send the whole response now, then let uvicorn carry on (keep-alive...)."""
        transport: Any = self.transport
        transport.flush()
        super().on_response_complete()

    # The request clock.  Arming and cancelling a timer for every request cost 1.5 µs
    # of the 26 µs a GET /health takes (measured with uvloop), so a request only notes
    # when it started, and one timer per connection checks on it: armed when a request
    # starts with none pending, it closes the connection if that request is overdue,
    # waits out the rest of its time if another request is running, and lapses if
    # none is.  It never outlives the connection (cancelled in connection_lost).

    def _start(self) -> None:
        self._started = self.loop.time()
        if self._deadline is None:
            self._arm(self._timeout)

    def _arm(self, delay: float) -> None:
        if self._timeout > 0:
            self._deadline = self.loop.call_later(delay, self._on_timer)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_timer(self) -> None:
        self._deadline = None
        started = self._started
        if started is None:
            if self._fresh:  # connected, never sent a byte: nothing to answer
                self.transport.close()
            return  # between requests: uvicorn's keep-alive timeout governs
        left = started + self._timeout - self.loop.time()
        if left > _TIMER_SLACK:  # a later request, started after this timer was set
            self._arm(left)
            return
        message = REQUEST_TIMEOUT.format(seconds=self._timeout)
        self._refuse(408, b"Request Timeout", message)

    def _refuse_head(self) -> None:
        message = HEADERS_TOO_LARGE.format(limit=self._max_head)
        self._refuse(431, b"Request Header Fields Too Large", message)

    def _refuse(self, status: int, reason: bytes, message: str) -> None:
        """Answer ``status`` if no earlier reply is owed, and close either way."""
        transport = self.transport
        if transport.is_closing():
            return
        log.info("request refused", extra={"status": status, "reason": message})
        if self._may_answer():
            transport.write(_refusal(status, reason, message))
        transport.close()

    def _may_answer(self) -> bool:
        """Whether the next bytes on the wire would be read as this request's reply."""
        if self.pipeline:  # earlier requests are waiting for their replies
            return False
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is None:
            return True
        if self._in_body:  # the head was parsed: ``cycle`` is this request's
            return not cycle.response_started
        return cycle.response_complete
