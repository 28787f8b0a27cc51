"""`HttpTransport` against hostile HTTP servers: a request has one deadline for the whole
exchange, and a reply body has a size cap.

The servers are real: a small raw-asyncio HTTP/1.1 server on 127.0.0.1 port 0 whose
replies each test scripts (dribbling one byte at a time, an endless chunked body, a huge
``Content-Length``, a compressed reply nobody asked for), or a front that forwards to a
real in-process `RondevuServer` and stalls the calls a test picks.  A dribbling server
paces its own writes by waiting for the client to hang up; the tests synchronise on the
client's exception and on the server seeing the hang-up, each under a bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from rondevu import HttpTransport, Rondevu, RondevuAPI, TransportError, ValidationError
from rondevu_core.config import ConnectionConfig
from rondevu_core.rules.signing import KeyPair
from rondevu_server.config import ServerConfig
from rondevu_server.server import RondevuServer
from tests.client_testing import loopback_client

WAIT = 10.0
"""Bound on every wait of a test: far above the deadlines under test."""

TIMEOUT = 0.5
"""The transport deadline the timeout tests use."""

PACE = 0.05
"""Seconds between two bytes of a dribbling reply: well inside any per-read timeout."""

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@dataclass
class Conn:
    """One request a `HostileServer` received, and the connection to write its reply on."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    head: bytes
    body: bytes
    sent: int = 0
    """Bytes of the reply written so far (status line and headers included)."""
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the client closed the connection while the reply was being written."""

    def write(self, data: bytes) -> None:
        self.writer.write(data)
        self.sent += len(data)

    def method(self) -> str | None:
        """The RPC method of the request (the first one of a batch); None for a request
        without a body (the client's ``GET /``, read once when it starts)."""
        if not self.body:
            return None
        call = json.loads(self.body)
        first = call[0] if isinstance(call, list) else call
        return str(first["method"])

    async def hangs_up_within(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the client to close the connection; True if it did.

        httpx never sends another request before it has the whole reply, so anything
        but end-of-file here is a bug of the test.
        """
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return False
        except ConnectionError:
            data = b""
        assert data == b"", "the client sent bytes in the middle of a reply"
        self.hung_up.set()
        return True

    async def stream_until_hang_up(self, frames: Iterable[bytes]) -> None:
        """Write ``frames`` as fast as the client takes them until it hangs up."""

        async def pump() -> None:
            for frame in frames:
                self.write(frame)
                await self.writer.drain()

        pumping = asyncio.ensure_future(pump())
        closing = asyncio.ensure_future(self.hangs_up_within(WAIT * 2))
        try:
            await asyncio.wait({pumping, closing}, return_when=asyncio.FIRST_COMPLETED)
            if pumping.done() and isinstance(pumping.exception(), ConnectionError):
                self.hung_up.set()
        finally:
            for task in (pumping, closing):
                task.cancel()
            await asyncio.gather(pumping, closing, return_exceptions=True)


Reply = Callable[[Conn], Awaitable[bool]]
"""Writes the reply to one request; True keeps the connection for the next request."""


class HostileServer:
    """HTTP/1.1 on 127.0.0.1 whose every reply is written by ``reply``."""

    def __init__(self, reply: Reply, *, small_buffers: bool = False) -> None:
        self.reply = reply
        self.small_buffers = small_buffers
        self.conns: list[Conn] = []
        self.url = ""
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if self.small_buffers:
            # Little room between the server's writes and the client's reads, so what
            # the server managed to send bounds what the client read.
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            writer.transport.set_write_buffer_limits(high=16384)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                conn = Conn(reader, writer, head, body)
                self.conns.append(conn)
                if not await self.reply(conn):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HostileServer]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            server.close()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()


@contextlib.asynccontextmanager
async def hostile(reply: Reply, *, small_buffers: bool = False) -> AsyncIterator[HostileServer]:
    """A running `HostileServer`."""
    async with HostileServer(reply, small_buffers=small_buffers).running() as server:
        yield server


def http_transport(url: str, **options: Any) -> contextlib.aclosing[HttpTransport]:
    """An `HttpTransport` closed on leaving the ``async with``."""
    return contextlib.aclosing(HttpTransport(url, **options))


# -- scripted replies ----------------------------------------------------------------


def json_reply(obj: Any, *, pad_to: int | None = None) -> bytes:
    """A whole 200 reply with ``obj`` as its JSON body (padded with spaces to ``pad_to``)."""
    body = json.dumps(obj).encode()
    if pad_to is not None:
        body = body.ljust(pad_to)
    return OK_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body


def chunked_reply(obj: Any, *, pad_to: int) -> bytes:
    """The same as `json_reply`, in chunked transfer encoding (1000-byte chunks)."""
    body = json.dumps(obj).encode().ljust(pad_to)
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"


async def dribble_body(conn: Conn) -> bool:
    """Status and headers at once, then a 100 kB body one byte per `PACE`."""
    conn.write(OK_HEAD + b"Content-Length: 100000\r\n\r\n")
    while not await conn.hangs_up_within(PACE):
        conn.write(b" ")
    return False


async def dribble_head(conn: Conn) -> bool:
    """A header line that never ends, one byte per `PACE`: the reply never starts."""
    conn.write(OK_HEAD + b"X-Padding: ")
    while not await conn.hangs_up_within(PACE):
        conn.write(b"a")
    return False


async def endless_chunked(conn: Conn) -> bool:
    """A chunked body that never ends, sent as fast as the client reads."""
    conn.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * 16384
    await conn.stream_until_hang_up(itertools.repeat(b"%x\r\n%s\r\n" % (len(chunk), chunk)))
    return False


async def huge_content_length(conn: Conn) -> bool:
    """Declares 10 GB, then sends nothing and waits for the client to hang up."""
    conn.write(OK_HEAD + b"Content-Length: 10000000000\r\n\r\n")
    await conn.hangs_up_within(WAIT * 2)
    return False


async def bad_gateway_endless(conn: Conn) -> bool:
    """A 502 whose error page never ends."""
    conn.write(b"HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n")
    await conn.stream_until_hang_up(itertools.repeat(b"400\r\n" + b"e" * 1024 + b"\r\n"))
    return False


OK_RESULT = {"success": True, "result": {"ok": 1}}


# -- the deadline ----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("reply", [dribble_body, dribble_head], ids=["body", "head"])
async def test_a_dribbling_reply_fails_at_the_deadline_and_drops_the_connection(
    reply: Reply,
) -> None:
    async with hostile(reply) as server, http_transport(server.url, timeout=TIMEOUT) as t:
        started = time.monotonic()
        with anyio.fail_after(WAIT), pytest.raises(TransportError) as raised:
            await t.send({"method": "getUser", "params": {"username": "alice"}})
        elapsed = time.monotonic() - started
        assert f"within the {TIMEOUT:g} s timeout" in str(raised.value)
        # The deadline is the whole request: not much later than it, however fast
        # bytes keep coming.
        assert TIMEOUT <= elapsed < TIMEOUT + 2
        # The abandoned reply does not keep its socket: the server sees the hang-up.
        with anyio.fail_after(WAIT):
            await server.conns[0].hung_up.wait()


@pytest.mark.anyio
async def test_the_deadline_holds_with_a_shared_httpx_client() -> None:
    async with (
        hostile(dribble_body) as server,
        httpx.AsyncClient(timeout=None) as shared,
        http_transport(server.url, timeout=TIMEOUT, client=shared) as t,
    ):
        with anyio.fail_after(WAIT), pytest.raises(TransportError, match="timeout"):
            await t.send({"method": "getUser", "params": {"username": "alice"}})
        with anyio.fail_after(WAIT):
            await server.conns[0].hung_up.wait()


# -- the size cap -----------------------------------------------------------------------

CAP = 256 * 1024


@pytest.mark.anyio
async def test_an_endless_chunked_body_stops_at_the_cap() -> None:
    # The client's receive buffer is small too, so the bytes the server got out are
    # about the bytes the client read.
    small_rcvbuf = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)]
    async with (
        hostile(endless_chunked, small_buffers=True) as server,
        httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(socket_options=small_rcvbuf)) as c,
        http_transport(server.url, timeout=WAIT * 2, max_response_bytes=CAP, client=c) as t,
    ):
        with anyio.fail_after(WAIT), pytest.raises(TransportError) as raised:
            await t.send({"method": "getUser", "params": {"username": "alice"}})
        assert f"max_response_bytes={CAP}" in str(raised.value)
        with anyio.fail_after(WAIT):
            await server.conns[0].hung_up.wait()
        # Kernel and asyncio buffers hold well under 1 MiB here; an unbounded read would
        # have taken the whole stream.
        assert CAP < server.conns[0].sent < CAP + 1024 * 1024


@pytest.mark.anyio
async def test_the_default_cap_stops_an_endless_body() -> None:
    async with hostile(endless_chunked) as server, http_transport(server.url) as t:
        with anyio.fail_after(WAIT), pytest.raises(TransportError) as raised:
            await t.send({"method": "getUser", "params": {"username": "alice"}})
        assert f"max_response_bytes={32 * 1024 * 1024}" in str(raised.value)
        with anyio.fail_after(WAIT):
            await server.conns[0].hung_up.wait()


@pytest.mark.anyio
async def test_a_huge_content_length_is_refused_before_any_body() -> None:
    # The server sends no body at all: only refusing on the header can end the call
    # before the (long) deadline.
    async with (
        hostile(huge_content_length) as server,
        http_transport(server.url, timeout=WAIT * 2, max_response_bytes=CAP) as t,
    ):
        with anyio.fail_after(WAIT), pytest.raises(TransportError) as raised:
            await t.send({"method": "getUser", "params": {"username": "alice"}})
        text = str(raised.value)
        assert "Content-Length 10000000000" in text
        assert f"max_response_bytes={CAP}" in text
        with anyio.fail_after(WAIT):
            await server.conns[0].hung_up.wait()


@pytest.mark.anyio
@pytest.mark.parametrize("framing", [json_reply, chunked_reply], ids=["length", "chunked"])
async def test_a_reply_of_exactly_the_cap_is_read_and_one_byte_more_is_not(
    framing: Callable[..., bytes],
) -> None:
    async def at_cap(conn: Conn) -> bool:
        extra = json.loads(conn.body)["params"]["extra"]
        conn.write(framing(OK_RESULT, pad_to=CAP + extra))
        return True

    async with hostile(at_cap) as server, http_transport(server.url, max_response_bytes=CAP) as t:
        with anyio.fail_after(WAIT):
            assert await t.send({"method": "x", "params": {"extra": 0}}) == OK_RESULT
            with pytest.raises(TransportError, match=f"max_response_bytes={CAP}"):
                await t.send({"method": "x", "params": {"extra": 1}})
            # And the transport is still usable afterwards.
            assert await t.send({"method": "x", "params": {"extra": 0}}) == OK_RESULT


@pytest.mark.anyio
async def test_an_error_status_is_reported_without_reading_its_endless_page() -> None:
    async with hostile(bad_gateway_endless) as server, http_transport(server.url) as t:
        with anyio.fail_after(WAIT), pytest.raises(TransportError, match="HTTP 502: Bad Gateway"):
            await t.send({"method": "getUser", "params": {"username": "alice"}})
        with anyio.fail_after(WAIT):
            await server.conns[0].hung_up.wait()


@pytest.mark.anyio
async def test_replies_are_requested_uncompressed_and_a_compressed_one_is_refused() -> None:
    async def gzipped(conn: Conn) -> bool:
        conn.write(OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd")
        return True

    async with hostile(gzipped) as server, http_transport(server.url) as t:
        with anyio.fail_after(WAIT), pytest.raises(TransportError, match="Content-Encoding"):
            await t.send({"method": "getUser", "params": {"username": "alice"}})
        assert b"\r\naccept-encoding: identity\r\n" in server.conns[0].head.lower()


@pytest.mark.parametrize("options", [{"timeout": 0}, {"timeout": -1.0}, {"max_response_bytes": -1}])
def test_bounds_must_make_sense(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="must"):
        HttpTransport("http://127.0.0.1:9", **options)


# -- callers recover after a stalled call ------------------------------------------------


@contextlib.asynccontextmanager
async def front(
    server: RondevuServer, stall: Callable[[Conn], bool]
) -> AsyncIterator[HostileServer]:
    """HTTP in front of a real in-process ``server``; requests ``stall`` picks dribble."""

    async def reply(conn: Conn) -> bool:
        if stall(conn):
            return await dribble_body(conn)
        status, body = await server.handle_rpc_body(conn.body, None)
        conn.write(
            b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, len(body), body)
        )
        return True

    async with hostile(reply) as running:
        yield running


@pytest.mark.anyio
@pytest.mark.parametrize("batching", [False, True], ids=["single", "batched"])
async def test_api_calls_recover_after_a_stalled_one(
    inprocess_server: RondevuServer, batching: bool
) -> None:
    stalled: list[Conn] = []

    def first_only(conn: Conn) -> bool:
        if stalled:
            return False
        stalled.append(conn)
        return True

    async with (
        front(inprocess_server, first_only) as server,
        RondevuAPI.http(server.url, timeout=TIMEOUT, batching=batching) as api,
    ):
        with anyio.fail_after(WAIT):
            with pytest.raises(TransportError, match="timeout"):
                await api.get_user("alice")
            assert (await api.get_user("alice")).available
            await stalled[0].hung_up.wait()


FAST = ConnectionConfig(
    connection_timeout_ms=5000,
    reconnect_backoff_base_ms=100,
    reconnect_backoff_max_ms=500,
    max_reconnect_attempts=0,
    ice_polling_interval_ms=100,
)


@pytest.mark.anyio
async def test_the_offer_pool_polls_again_after_a_stalled_poll() -> None:
    # The pool keeps one poll in flight: before the deadline was for the whole request,
    # a poll reply that dribbled stopped the offerer from ever seeing an answer.
    server = await RondevuServer.open(ServerConfig())
    polls: list[Conn] = []

    def first_poll(conn: Conn) -> bool:
        if conn.method() != "poll":
            return False
        polls.append(conn)
        return len(polls) == 1

    try:
        async with (
            front(server, first_poll) as http,
            Rondevu.connect(
                transport=HttpTransport(http.url, timeout=TIMEOUT),
                username="alice",
                keypair=KeyPair.from_seed(bytes([1]) * 32),
                ice_servers=[],
                host_addresses=["127.0.0.1"],
                connection_config=FAST,
            ) as alice,
            loopback_client(server, "bob", 2, connection_config=FAST) as bob,
        ):
            alice.publish_service("chat:1.0.0", poll_interval_ms=100)
            with anyio.fail_after(WAIT * 2):
                await alice.start_filling()
                conn = await bob.connect_to_service("chat:1.0.0@alice")
                await conn.wait_connected()
                await polls[0].hung_up.wait()
            assert len(polls) > 1
    finally:
        await server.aclose()
