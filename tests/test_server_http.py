"""The HTTP layer of ``rondevu serve``: one write per response, framing, keep-alive.

Raw sockets against the real uvicorn server with the shipped settings, so the bytes on
the wire are what a client sees.  A counting transport (a subclass of the shipped
protocol) checks that each response leaves in exactly one write.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from rondevu_server.uvicorn_http import CoalescingHttpProtocol
from tests.rondevu_server_testing import Peer, running_server

WRITES: list[int] = []


class _Counting:
    """Counts writes reaching the real transport."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(len(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CountingProtocol(CoalescingHttpProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        counted: Any = _Counting(transport)
        super().connection_made(counted)


def _read_response(conn: socket.socket, buffer: bytearray) -> tuple[bytes, bytes]:
    """One response (head, body) from ``conn``; leftover bytes stay in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        assert chunk, "connection closed"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = conn.recv(65536)
        assert chunk, "connection closed"
        rest += chunk
    buffer[:] = rest[length:]
    return head, rest[:length]


def _post(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def test_each_response_is_one_write_with_content_length() -> None:
    WRITES.clear()
    with running_server("sqlite", uvicorn_settings={"http": _CountingProtocol}) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            buffer = bytearray()
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = _read_response(conn, buffer)
            assert head.startswith(b"HTTP/1.1 200")
            assert b"transfer-encoding" not in head.lower()
            assert body.startswith(b'{"status":"ok"')
            # Two pipelined calls on the same kept-alive connection: both answered, in order.
            conn.sendall(_post(b"[]") + _post(b"{"))
            first = _read_response(conn, buffer)
            second = _read_response(conn, buffer)
            assert first[0].startswith(b"HTTP/1.1 400")
            assert first[1] == b'{"error":"Empty request array"}'
            assert second[1] == b'{"success":false,"error":"Invalid request format"}'
    assert len(WRITES) == 3


def test_expect_continue_is_sent_before_the_body() -> None:
    """A write outside a response (100 Continue) is not held back until the response."""
    with running_server("sqlite") as srv:
        peer = Peer()
        body = srv.http.build_request(
            "POST", "/rpc", json=peer.call("getUser", {"username": "nobody"}, now=srv.clock.now)
        ).content
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            request = _post(body, b"Expect: 100-continue\r\n")
            head_only, _, payload = request.partition(b"\r\n\r\n")
            conn.sendall(head_only + b"\r\n\r\n")
            interim = conn.recv(65536)
            assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            buffer = bytearray(interim.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"))
            conn.sendall(payload)
            head, reply = _read_response(conn, buffer)
            assert head.startswith(b"HTTP/1.1 200")
            assert reply == b'{"success":true,"result":{"username":"nobody","available":true}}'
