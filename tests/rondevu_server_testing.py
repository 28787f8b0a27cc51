"""Test harness for the signaling server: a real HTTP server on 127.0.0.1, real storage.

`running_server` starts uvicorn on a socket bound *before* the server thread starts, so
the port is known and requests simply queue until the server accepts them (no sleeps,
no polling).  The server reads a `FakeClock` the test controls.  PostgreSQL servers get a
fresh schema each, dropped afterwards, so parallel runs on the shared ``test`` database
never meet.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import uvicorn

from rondevu_core.rules.signing import KeyPair, build_message, expected_context
from rondevu_server.asgi import RondevuApp
from rondevu_server.cli import uvicorn_config
from rondevu_server.config import ServerConfig
from rondevu_server.server import RondevuServer

POSTGRES_DSN_ENV = "RONDEVU_TEST_POSTGRES_DSN"
START = 1_765_700_000_000
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

_names = itertools.count()
T = TypeVar("T")


def postgres_dsn() -> str:
    """The test DSN, or skip the test with the reason."""
    dsn = os.environ.get(POSTGRES_DSN_ENV)
    if not dsn:
        pytest.skip(f"{POSTGRES_DSN_ENV} is not set")
    return dsn


def unique(prefix: str) -> str:
    """A fresh valid username or service name."""
    return f"{prefix}{next(_names)}-{uuid.uuid4().hex[:6]}"


def sdp(tag: str | None = None) -> str:
    """A small, unique offer or answer SDP."""
    return f"v=0\r\no=- {tag or uuid.uuid4().hex} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


class FakeClock:
    """The server's clock: Unix ms, moved only by the test."""

    def __init__(self, now: int = START) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        """Move time forward by ``ms``."""
        self.now += ms


class Peer:
    """A client identity that signs calls the way a 0.18.9 client does."""

    def __init__(self, prefix: str = "p") -> None:
        self.username = unique(prefix)
        self.keypair = KeyPair.generate(os.urandom)

    def call(
        self,
        method: str,
        params: dict[str, Any],
        *,
        now: int,
        message: str | None = None,
        with_key: bool = True,
    ) -> dict[str, Any]:
        """The envelope of one call, signed at ``now`` (``message`` overrides the text)."""
        if message is None:
            context = expected_context(method, params)
            message = build_message(method, self.username, context, now)
        body: dict[str, Any] = {
            "method": method,
            "message": message,
            "signature": self.keypair.sign(message),
        }
        if with_key:
            body["publicKey"] = self.keypair.public_key
        body["params"] = params
        return body


@dataclass
class RunningServer:
    """A live server: its URL, clock, in-process object and an HTTP client."""

    url: str
    clock: FakeClock
    server: RondevuServer
    http: httpx.Client
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's own event loop (storage is bound to it)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def post(self, body: Any) -> httpx.Response:
        """POST a JSON value to /rpc."""
        return self.http.post("/rpc", json=body)

    def rpc(self, peer: Peer, method: str, params: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """One signed call; the single response object."""
        response = self.post(peer.call(method, params, now=self.clock.now, **kw))
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def ok(self, peer: Peer, method: str, params: dict[str, Any], **kw: Any) -> Any:
        """One signed call that must succeed; its result."""
        reply = self.rpc(peer, method, params, **kw)
        assert reply["success"] is True, reply
        return reply["result"]

    def error(self, peer: Peer, method: str, params: dict[str, Any], **kw: Any) -> str:
        """One signed call that must fail; its error text."""
        reply = self.rpc(peer, method, params, **kw)
        assert reply["success"] is False, reply
        error: str = reply["error"]
        return error

    def publish(self, peer: Peer, service: str, count: int = 1, ttl: int = 300_000) -> Any:
        """Publish ``service:1.0.0@peer`` with ``count`` fresh offers."""
        params = {
            "serviceFqn": f"{service}:1.0.0@{peer.username}",
            "offers": [{"sdp": sdp()} for _ in range(count)],
            "ttl": ttl,
        }
        return self.ok(peer, "publishService", params)


def make_config(backend: str, **settings: Any) -> tuple[ServerConfig, str | None]:
    """A config for ``backend`` and the PostgreSQL schema to drop afterwards (if any)."""
    if backend == "postgres":
        schema = f"rdv_test_{uuid.uuid4().hex[:12]}"
        config = ServerConfig(db=postgres_dsn(), db_schema=schema, db_pool_size=4, **settings)
        return config, schema
    return ServerConfig(db=":memory:", **settings), None


def drop_schema(schema: str) -> None:
    """Remove a test schema and everything in it."""

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_dsn())
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()

    asyncio.run(drop())


@contextmanager
def running_server(
    backend: str,
    *,
    clock: FakeClock | None = None,
    uvicorn_settings: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[RunningServer]:
    """Serve ``backend`` over HTTP on 127.0.0.1 until the block ends, then clean up.

    ``clock`` replaces the default `FakeClock` (e.g. a subclass that follows real time,
    for clients that sign with the wall clock).  uvicorn runs with the settings of
    ``rondevu serve`` (`uvicorn_config`), changed by ``uvicorn_settings``."""
    config, schema = make_config(backend, **settings)
    clock = clock if clock is not None else FakeClock()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    port = sock.getsockname()[1]
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        try:
            server = await RondevuServer.open(config, clock=clock)
        except BaseException as error:
            holder["error"] = error
            ready.set()
            raise
        app = RondevuApp(config, server=server, clock=clock)
        uv = uvicorn.Server(uvicorn_config(app, loop="asyncio", **(uvicorn_settings or {})))
        holder["server"], holder["uvicorn"] = server, uv
        holder["loop"] = asyncio.get_running_loop()
        ready.set()
        try:
            await uv.serve(sockets=[sock])
        finally:
            await server.aclose()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "server did not start"
        if "error" in holder:
            raise holder["error"]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield RunningServer(
                url=f"http://127.0.0.1:{port}",
                clock=clock,
                server=holder["server"],
                http=http,
                loop=holder["loop"],
            )
    finally:
        if "uvicorn" in holder:
            # as `rondevu serve` does when told to stop: held calls answer first
            holder["loop"].call_soon_threadsafe(holder["server"].release_waiters)
            holder["uvicorn"].should_exit = True
        thread.join(30)
        sock.close()
        if schema is not None:
            drop_schema(schema)
        assert not thread.is_alive(), "server thread did not stop"


def now_ms() -> int:
    """The wall clock in Unix ms, for calls to a server whose clock is real time."""
    return time.time_ns() // 1_000_000


def call(client: httpx.Client, peer: Peer, method: str, params: dict[str, Any]) -> Any:
    """One call signed now, through ``client``, that must succeed; its result."""
    reply = client.post("/rpc", json=peer.call(method, params, now=now_ms())).json()
    assert reply["success"], reply
    return reply["result"]
