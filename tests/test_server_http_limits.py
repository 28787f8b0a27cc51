"""Bounds of the HTTP layer: header size (431), request time (408 and close), the
connection limit (503) and which X-Forwarded-For entry the rate limit trusts.

Everything runs against the real uvicorn server of ``rondevu serve`` on 127.0.0.1 over
raw sockets, so the bytes on the wire are what an attacker or a client sees.  Timeouts
are tiny (``request_timeout`` of a fraction of a second) and every wait is a socket read
with its own deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rondevu_server.config import ServerConfig
from rondevu_server.uvicorn_http import CoalescingHttpProtocol
from tests.rondevu_server_testing import RunningServer, running_server
from tests.test_server_http import _read_response

LIMIT = 1024
TIMEOUT = 0.2
PROTOCOLS: list[CoalescingHttpProtocol] = []


class _Recording(CoalescingHttpProtocol):
    """The shipped protocol, remembering its instances (to look at their timers)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        PROTOCOLS.append(self)
        super().connection_made(transport)


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


@contextmanager
def _connect(srv: RunningServer) -> Iterator[socket.socket]:
    with socket.create_connection(_address(srv.url), timeout=5) as conn:
        yield conn


def _head(size: int, path: bytes = b"/health") -> bytes:
    """A GET request head of exactly ``size`` bytes (request line to blank line)."""
    start = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def _response(conn: socket.socket, buffer: bytearray) -> tuple[int, bytes, bytes]:
    """One response (status, head, body) from ``conn``; leftover bytes stay in ``buffer``."""
    head, body = _read_response(conn, buffer)
    return int(head.split(b" ", 2)[1]), head, body


def _until_closed(conn: socket.socket, wait: float = 5.0) -> bytes:
    """All the server sends until it closes the connection, waiting at most ``wait``
    seconds for each read (a reset after the server's last bytes counts as closed: the
    kernel resets a connection closed with unread input)."""
    conn.settimeout(wait)
    data = bytearray()
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


def _refusal(data: bytes) -> tuple[int, bytes, dict[str, Any]]:
    """Status, head and JSON body of the one response a refused connection got."""
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    return int(head.split(b" ", 2)[1]), head, json.loads(body)


def _asgi_tasks_left(srv: RunningServer) -> int:
    """Request tasks still running on the server after up to 5 s for them to end."""

    async def settle() -> int:
        tasks = [
            task
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "") == "RequestResponseCycle.run_asgi"
        ]
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=5)
        return len(pending)

    return srv.run(settle())


# -- max_header_bytes -----------------------------------------------------------------


def test_a_head_of_exactly_the_limit_is_served_and_one_byte_more_is_refused() -> None:
    with running_server("sqlite", max_header_bytes=LIMIT) as srv, _connect(srv) as conn:
        buffer = bytearray()
        # Counted per request: three heads of the full size in a row on one connection.
        for _ in range(3):
            conn.sendall(_head(LIMIT))
            status, _, body = _response(conn, buffer)
            assert status == 200
            assert body.startswith(b'{"status":"ok"')
        conn.sendall(_head(LIMIT + 1))
        status, head, reply = _refusal(bytes(buffer) + _until_closed(conn))
        assert status == 431
        assert b"content-type: application/json" in head
        assert reply == {
            "success": False,
            "error": f"Request headers too large (max {LIMIT} bytes)",
        }


def test_pipelined_requests_each_have_their_own_head_budget() -> None:
    with running_server("sqlite", max_header_bytes=LIMIT) as srv, _connect(srv) as conn:
        conn.sendall(_head(LIMIT * 3 // 4) * 5)
        buffer = bytearray()
        assert [_response(conn, buffer)[0] for _ in range(5)] == [200] * 5


def _send_until_refused(conn: socket.socket, first: bytes, more: bytes, cap: int) -> int:
    """Bytes sent before the kernel refused more (the server closed), at most ``cap``."""
    sent, chunk = 0, first
    try:
        while sent < cap:
            conn.sendall(chunk)
            sent += len(chunk)
            chunk = more
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_an_endless_head_is_refused_without_reading_it_all() -> None:
    """The reported attack: header lines streamed without end on one connection.  64 MiB
    is far more than the socket buffers on both ends hold, so a server still reading
    would take it all."""
    cap = 64 * 1024 * 1024
    with running_server("sqlite", max_header_bytes=LIMIT) as srv, _connect(srv) as conn:
        lines = (b"X-Pad: " + b"a" * 1000 + b"\r\n") * 64
        sent = _send_until_refused(conn, b"GET /health HTTP/1.1\r\nHost: x\r\n" + lines, lines, cap)
        assert sent < cap
        status, _, reply = _refusal(_until_closed(conn))
        assert status == 431
        assert reply["success"] is False
        assert _asgi_tasks_left(srv) == 0


def test_a_refused_connection_leaves_no_timer_behind() -> None:
    """The request clock started with the refused head stops with its connection."""
    with _recorded_server(max_header_bytes=LIMIT) as srv, _connect(srv) as conn:
        conn.sendall(_head(2 * LIMIT))
        assert _until_closed(conn).startswith(b"HTTP/1.1 431 ")
        assert _no_live_timers()


def test_chunked_trailers_are_bounded_like_headers(caplog: pytest.LogCaptureFixture) -> None:
    with running_server("sqlite", max_header_bytes=LIMIT) as srv, _connect(srv) as conn:
        conn.sendall(
            b"POST /rpc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\nX-Trailer: " + b"a" * (2 * LIMIT)
        )
        status, _, _ = _refusal(_until_closed(conn))
        assert status == 431
        assert _asgi_tasks_left(srv) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _rpc_status(srv_url: str, forwarded: str) -> int:
    """Status of one POST /rpc (any body: the rate limit runs before parsing)."""
    with socket.create_connection(_address(srv_url), timeout=10) as conn:
        conn.sendall(
            b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Forwarded-For: " + forwarded.encode() + b"\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def test_rate_limit_keys_on_the_last_forwarded_for_entry() -> None:
    """The first entries are the client's to write: a spoofed 127.0.0.1 (loopback is
    exempt) or a fresh address per call must not escape the limit of the address the
    proxy appended."""
    with running_server(
        "sqlite", trust_forwarded_for=True, rate_limit_per_second=0.001, rate_limit_burst=2
    ) as srv:
        spoofed = ["127.0.0.1", "10.0.0.1", "10.0.0.2", "::1"]
        statuses = [_rpc_status(srv.url, f"{first}, 203.0.113.7") for first in spoofed]
        assert statuses == [200, 200, 429, 429]
        # Another client behind the same proxy has its own budget, even when it sends
        # the X-Forwarded-For header twice (the lines read as one list).
        assert _rpc_status(srv.url, "203.0.113.7") == 429
        assert _rpc_status(srv.url, "203.0.113.8") == 200
        # The proxy's own entry is what counts, however many lines came before it.
        assert _rpc_status(srv.url, "127.0.0.1\r\nX-Forwarded-For: 203.0.113.8") == 200
        assert _rpc_status(srv.url, "127.0.0.1\r\nX-Forwarded-For: 203.0.113.8") == 429


# -- request_timeout ------------------------------------------------------------------


@contextmanager
def _recorded_server(**settings: Any) -> Iterator[RunningServer]:
    """A server with these settings whose protocols are recorded in `PROTOCOLS`."""
    PROTOCOLS.clear()
    protocol = _Recording.for_config(ServerConfig(**settings))
    with running_server("sqlite", uvicorn_settings={"http": protocol}, **settings) as srv:
        yield srv


def _no_live_timers() -> bool:
    """Every connection seen is closed and none left its request timer running.  (On
    the asyncio loop a connection's ``connection_lost`` runs before its socket closes,
    so once the client has read the end of the stream this is settled.)"""
    return all(p._deadline is None and p.transport.is_closing() for p in PROTOCOLS)


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\n", id="head"),
        pytest.param(
            b'POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"method"',
            id="body",
        ),
        pytest.param(b"\r\n", id="before-the-request-line"),
    ],
)
def test_an_incomplete_request_is_answered_408_and_closed(
    partial: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with _recorded_server(request_timeout=TIMEOUT) as srv, _connect(srv) as slow:
        slow.sendall(partial)
        # Meanwhile a whole request on another connection is served.
        with _connect(srv) as other:
            other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _response(other, bytearray())[0] == 200
        status, _, reply = _refusal(_until_closed(slow))
        assert status == 408
        assert reply == {
            "success": False,
            "error": f"Request not received in time (max {TIMEOUT:g} seconds)",
        }
        other.close()
        assert _asgi_tasks_left(srv) == 0  # the app saw http.disconnect and returned
        assert _no_live_timers()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_request_cut_short_is_not_run() -> None:
    """The app sees http.disconnect and answers nothing: the cut-off body is not run
    as a call, nor charged to the client's rate limit (one call allowed here)."""
    with running_server(
        "sqlite",
        request_timeout=TIMEOUT,
        rate_limit_loopback=True,
        rate_limit_per_second=0.001,
        rate_limit_burst=1,
    ) as srv:
        with _connect(srv) as slow:
            slow.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}")
            assert _until_closed(slow).startswith(b"HTTP/1.1 408 ")
        assert _asgi_tasks_left(srv) == 0
        with _connect(srv) as conn:
            conn.sendall(_post(b"{}"))
            assert _response(conn, bytearray())[0] == 200


def test_a_request_trickled_byte_by_byte_is_closed_all_the_same() -> None:
    """Slowloris: activity does not move the deadline, only a complete request does."""
    with running_server("sqlite", request_timeout=TIMEOUT) as srv, _connect(srv) as slow:
        drip = iter(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Drip: " + b"a" * 1000)
        start = time.monotonic()
        slow.settimeout(TIMEOUT / 4)  # the pace: one byte per read that times out
        data = b""
        while time.monotonic() - start < 5:
            try:
                data = slow.recv(65536)
                break  # the server answered, or closed
            except TimeoutError:
                slow.sendall(bytes([next(drip)]))
        assert data.startswith(b"HTTP/1.1 408 ")


def test_a_connection_that_sends_nothing_is_closed_without_a_reply() -> None:
    with _recorded_server(request_timeout=TIMEOUT) as srv, _connect(srv) as idle:
        assert _until_closed(idle) == b""
        assert _no_live_timers()


def test_a_kept_alive_connection_outlives_the_request_timeout() -> None:
    """Between requests the connection is idle, not slow: uvicorn's keep-alive (5 s
    here) governs it, and each request gets a fresh ``request_timeout``."""
    with _recorded_server(request_timeout=TIMEOUT) as srv, _connect(srv) as conn:
        buffer = bytearray()
        for _ in range(3):
            for _ in range(5):
                conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _response(conn, buffer)[0] == 200
            # Idle for three request timeouts: the server must not close.
            conn.settimeout(3 * TIMEOUT)
            with pytest.raises(TimeoutError):
                conn.recv(1)
            conn.settimeout(5)
        conn.sendall(_post(b"{}"))
        assert _response(conn, buffer)[0] == 200


def _post(body: bytes) -> bytes:
    return b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


# -- max_connections ------------------------------------------------------------------


def test_requests_beyond_max_connections_get_503() -> None:
    with running_server("sqlite", max_connections=2) as srv, _connect(srv) as a, _connect(srv) as b:
        buffers = {a: bytearray(), b: bytearray()}
        for conn in (a, b, a, b):
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _response(conn, buffers[conn])[0] == 200
        with _connect(srv) as third:
            third.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = _until_closed(third)
        assert data.startswith(b"HTTP/1.1 503 ")
        assert b"connection: close" in data.lower()


def test_one_address_cannot_hold_more_than_its_share_of_connections() -> None:
    with running_server("sqlite", max_connections_per_client=3, rate_limit_loopback=True) as srv:
        host, port = _address(srv.url)
        held = [socket.create_connection((host, port), timeout=5) for _ in range(3)]
        try:
            with socket.create_connection((host, port), timeout=5) as extra:
                assert _until_closed(extra) == b""  # closed at once, nothing said
            for conn in held:  # the three still work
                buffer = bytearray()
                conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _response(conn, buffer)[0] == 200
            held.pop().close()
            # the server notices the close, then a new connection fits again
            for _ in range(50):
                with socket.create_connection((host, port), timeout=5) as again:
                    again.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if _until_closed(again).startswith(b"HTTP/1.1 200"):
                        break
            else:
                raise AssertionError("a freed connection slot was never reused")
        finally:
            for conn in held:
                conn.close()


def test_loopback_has_no_per_client_connection_cap_by_default() -> None:
    with running_server("sqlite", max_connections_per_client=1) as srv:
        host, port = _address(srv.url)
        with (
            socket.create_connection((host, port), timeout=5) as first,
            socket.create_connection((host, port), timeout=5) as second,
        ):
            for conn in (first, second):
                conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _response(conn, bytearray())[0] == 200
