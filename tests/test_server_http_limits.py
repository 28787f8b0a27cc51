"""Bounds of the HTTP layer: header size (431), request time (408 and close), the
connection limit (503) and which X-Forwarded-For entry the rate limit trusts.

Everything runs against the real uvicorn server of ``rondevu serve`` on 127.0.0.1 over
raw sockets, so the bytes on the wire are what an attacker or a client sees.  Timeouts
are tiny (``request_timeout`` of a fraction of a second) and every wait is a socket read
with its own deadline, never a sleep.
"""

from __future__ import annotations

import socket

from tests.rondevu_server_testing import running_server


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


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
