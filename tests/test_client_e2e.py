"""End to end: `Rondevu` clients with real aiortc peers through our real signaling server.

Every flow runs twice, unchanged: over HTTP to a uvicorn server on 127.0.0.1 (in its own
thread, so this loop holds only client tasks), and through `InProcessTransport` to a
`RondevuServer` on this loop.  Every client is built with ``ice_servers=[]`` and
``host_addresses=["127.0.0.1"]``, so all WebRTC traffic stays on loopback
(`test_connect_and_exchange` checks the candidates of both descriptions).

The killed-peer test runs the publisher in a separate process (tests/peers/publisher.py)
and kills it with SIGKILL: only HTTP can reach a server from two processes.

The server's clock follows real time here (`WallClock`): clients sign with the wall
clock, and answers are polled by server timestamps, which a frozen clock would collide.
Pools poll for answers every `POLL_MS` and answerers retry quickly (`FAST`), which keeps
the file fast; nothing sleeps to synchronise, everything waits on events under
``anyio.fail_after``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioice.ice
import anyio
import pytest
from aiortc import RTCPeerConnection
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from rondevu import DurableConnection, HttpTransport, InProcessTransport, Rondevu
from rondevu.rpc_client import wall_clock_ms
from rondevu.transport import SignalingTransport
from rondevu_core import events as ev
from rondevu_core.config import ConnectionConfig
from rondevu_core.rules.ice import DEFAULT_ICE_CONFIGURATION, NO_ICE_SERVERS
from rondevu_core.rules.sdp import candidates_from_sdp
from rondevu_core.rules.signing import KeyPair
from rondevu_server.config import ServerConfig
from rondevu_server.server import RondevuServer
from tests.rondevu_server_testing import FakeClock, RunningServer, running_server, unique

TIMEOUT = 20.0
KINDS = ["http", "inprocess"]
LOOPBACK = ["127.0.0.1"]
POLL_MS = 50
FAST = ConnectionConfig(
    connection_timeout_ms=5000,
    reconnect_backoff_base_ms=50,
    reconnect_backoff_max_ms=400,
    max_reconnect_attempts=0,  # unlimited: a test's own deadline bounds it
    ice_polling_interval_ms=100,
)
PUBLISHER = Path(__file__).parent / "peers" / "publisher.py"


class WallClock(FakeClock):
    """A server clock that follows real time (Unix ms)."""

    def __call__(self) -> int:
        return wall_clock_ms()


@pytest.fixture(scope="module")
def http_server() -> Iterator[RunningServer]:
    with running_server("sqlite", clock=WallClock()) as running:
        yield running


@dataclass
class Env:
    """One way of reaching a real server."""

    kind: str
    make_transport: Callable[[], SignalingTransport]

    def client(
        self,
        prefix: str,
        config: ConnectionConfig = FAST,
        *,
        username: str | None = None,
        keypair: KeyPair | None = None,
    ) -> Rondevu:
        """A fresh identity (or the given one), WebRTC on loopback only, quick to retry."""
        return Rondevu.connect(
            transport=self.make_transport(),
            username=username or unique(prefix),
            keypair=keypair,
            ice_servers=[],
            host_addresses=LOOPBACK,
            connection_config=config,
        )


@pytest.fixture(params=KINDS)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    if request.param == "http":
        srv: RunningServer = request.getfixturevalue("http_server")
        yield Env("http", lambda: HttpTransport(srv.url))
        return
    server = await RondevuServer.open(ServerConfig(db=":memory:"))
    try:
        yield Env("inprocess", lambda: InProcessTransport(server))
    finally:
        await server.aclose()


# -- helpers -------------------------------------------------------------------------


async def publish(rondevu: Rondevu, service: str, max_offers: int = 1) -> None:
    """Publish ``service`` and return once its offers are on the server."""
    rondevu.publish_service(service, max_offers=max_offers, poll_interval_ms=POLL_MS)
    await rondevu.start_filling()


async def next_incoming(rondevu: Rondevu) -> DurableConnection:
    """The next connection a peer opened to ``rondevu``'s offers."""
    incoming = rondevu.incoming()
    assert isinstance(incoming, AsyncGenerator)
    async with aclosing(incoming):
        return await anext(incoming)


async def until(rondevu: Rondevu, name: str, condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds, re-checking at every client event ``name``."""
    changed = anyio.Event()

    def check(_: object) -> None:
        if condition():
            changed.set()

    off = rondevu.on(name, check)
    try:
        if not condition():
            await changed.wait()
    finally:
        off()


def sdp_hosts(sdp: str) -> set[str]:
    """The addresses of every candidate in ``sdp``."""
    return {c.parsed().address for c in candidates_from_sdp(sdp) if not c.is_end_of_candidates}


def open_peer_connections() -> list[RTCPeerConnection]:
    """Every aiortc peer connection alive in this process that is not closed."""
    gc.collect()
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, RTCPeerConnection) and obj.connectionState != "closed"
    ]


def udp_socket_inodes() -> set[str]:
    """Inodes of this process's UDP sockets (aioice's), from /proc."""
    table: set[str] = set()
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        with open(name) as f:
            table |= {line.split()[9] for line in list(f)[1:]}
    ours: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            ours.add(target[8:-1])
    return ours & table


# -- flows -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["fqn", "discovery"])
async def test_connect_and_exchange(env: Env, how: str) -> None:
    """Connect by FQN and by discovery; str and bytes flow both ways and keep their type;
    every candidate on both sides is on 127.0.0.1."""
    service = f"{unique('chat')}:1.0.0"
    with anyio.fail_after(TIMEOUT):
        async with env.client("alice") as alice, env.client("bob") as bob:
            await publish(alice, service)
            if how == "fqn":
                conn = await bob.connect_to_service(f"{service}@{alice.username}")
            else:
                conn = await bob.connect_to_service(service=service)
            theirs = await next_incoming(alice)
            await conn.wait_connected()
            await theirs.wait_connected()
            assert theirs.peer_username == bob.username
            assert theirs.role == "offerer"
            assert conn.role == "answerer"
            assert conn.offer_id == theirs.offer_id

            conn.send("hello")
            conn.send(b"\x00\xffbin")
            assert await theirs.receive() == "hello"
            got = await theirs.receive()
            assert isinstance(got, bytes)
            assert got == b"\x00\xffbin"
            theirs.send(b"\x01reply")
            theirs.send("réponse")
            got = await conn.receive()
            assert isinstance(got, bytes)
            assert got == b"\x01reply"
            text = await conn.receive()
            assert isinstance(text, str)
            assert text == "réponse"

            for side in (conn, theirs):
                pc = side.peer_connection
                assert isinstance(pc, RTCPeerConnection)
                local = sdp_hosts(pc.localDescription.sdp)
                remote = sdp_hosts(pc.remoteDescription.sdp)
                assert local == {"127.0.0.1"}
                assert remote == {"127.0.0.1"}


@pytest.mark.anyio
async def test_pool_of_three_serves_three_at_once_and_refills(env: Env) -> None:
    """max_offers=3: three answerers connected at the same time, then the pool is back to
    three unanswered offers and a fourth peer connects too."""
    service = f"{unique('chat')}:1.0.0"
    fqn = f"{service}@"
    with anyio.fail_after(TIMEOUT * 2):
        async with (
            env.client("alice") as alice,
            env.client("b1") as b1,
            env.client("b2") as b2,
            env.client("b3") as b3,
            env.client("b4") as b4,
        ):
            await publish(alice, service, max_offers=3)
            assert alice.get_service_status().offer_count == 3
            fqn += alice.username
            answerers = [b1, b2, b3]
            conns = [await b.connect_to_service(fqn) for b in answerers]
            for conn in conns:
                await conn.wait_connected()
            # The offerer side may report its end a moment after the answerer's.
            await until(alice, "connection:opened", lambda: len(alice.active_connections) == 3)
            served = alice.active_connections
            assert len(served) == 3
            assert {c.peer_username for c in served} == {b.username for b in answerers}
            assert len({c.offer_id for c in conns}) == 3
            assert all(c.is_connected for c in conns)  # all three at the same time

            await until(alice, "offers:published", lambda: _pool_full(alice, 3))

            fourth = await b4.connect_to_service(fqn)
            await fourth.wait_connected()
            await until(alice, "connection:opened", lambda: len(alice.active_connections) == 4)
            for i, conn in enumerate((*conns, fourth)):
                conn.send(f"from {i}")
            by_peer = {c.peer_username: c for c in alice.active_connections}
            for i, b in enumerate((*answerers, b4)):
                assert await by_peer[b.username].receive() == f"from {i}"


def _pool_full(rondevu: Rondevu, n: int) -> bool:
    status = rondevu.get_service_status()
    return status.active and status.offer_count == n


@pytest.mark.anyio
async def test_async_with_leaves_nothing_behind(env: Env) -> None:
    """Leaving ``async with`` closes every connection (answerer, offerer, unanswered
    offers): no task, no open aiortc peer connection, no UDP socket is left."""
    service = f"{unique('chat')}:1.0.0"
    tasks_before = asyncio.all_tasks()
    udp_before = udp_socket_inodes()
    closed: list[ev.Event] = []
    with anyio.fail_after(TIMEOUT):
        async with env.client("alice") as alice, env.client("bob") as bob:
            await publish(alice, service, max_offers=2)
            conn = await bob.connect_to_service(f"{service}@{alice.username}")
            conn.on("closed", closed.append)
            await conn.wait_connected()
            conn.send("x")
            theirs = await next_incoming(alice)
            theirs.on("closed", closed.append)
            assert await theirs.receive() == "x"
            assert len(open_peer_connections()) >= 3  # two connected, >= 1 unanswered
            assert udp_socket_inodes() - udp_before
        assert conn.closed
        assert theirs.closed
        assert len(closed) == 2
    leftover = asyncio.all_tasks() - tasks_before
    assert not leftover, leftover
    assert open_peer_connections() == []
    assert udp_socket_inodes() - udp_before == set()


@pytest.mark.anyio
async def test_close_ends_one_connection_and_its_peer_sees_it(env: Env) -> None:
    """``conn.close()`` closes for good (no reconnection) and the other side notices."""
    service = f"{unique('chat')}:1.0.0"
    with anyio.fail_after(TIMEOUT):
        async with env.client("alice") as alice, env.client("bob") as bob:
            await publish(alice, service)
            conn = await bob.connect_to_service(f"{service}@{alice.username}")
            await conn.wait_connected()
            theirs = await next_incoming(alice)
            await theirs.wait_connected()
            dropped = anyio.Event()
            theirs.on("disconnected", lambda _: dropped.set())
            theirs.on("closed", lambda _: dropped.set())
            pc = conn.peer_connection
            await conn.close()
            assert conn.closed
            assert conn not in bob.active_connections
            assert pc.connectionState == "closed"
            await dropped.wait()  # the offerer side saw its data channel go away


@pytest.mark.anyio
async def test_publisher_gone_and_back_delivers_the_buffered_messages(env: Env) -> None:
    """The same recovery flow in one process (both transports): the publisher's client
    closes, the answerer reports ``disconnected`` and buffers, a new client with the same
    identity publishes again and receives the buffered messages in order."""
    service = f"{unique('chat')}:1.0.0"
    owner, keypair = unique("pub"), KeyPair.generate(os.urandom)
    quick = dataclasses.replace(FAST, connection_timeout_ms=2000)
    with anyio.fail_after(TIMEOUT):
        async with env.client("bob", quick) as bob:
            async with env.client("", username=owner, keypair=keypair) as first:
                await publish(first, service)
                conn = await bob.connect_to_service(f"{service}@{owner}")
                await conn.wait_connected()
                old_offer = conn.offer_id
                down = anyio.Event()
                conn.on("disconnected", lambda _: down.set())
            await down.wait()
            conn.send("one")
            conn.send(b"two")
            assert conn.state != "connected"
            async with env.client("", username=owner, keypair=keypair) as second:
                await publish(second, service)
                await conn.wait_connected()
                assert conn.offer_id != old_offer
                theirs = await next_incoming(second)
                assert await theirs.receive() == "one"
                assert await theirs.receive() == b"two"


# -- the publisher process killed -------------------------------------------------------


class PublisherProcess:
    """tests/peers/publisher.py in a child process; its JSON stdout lines as dicts."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)

    async def expect(self, event: str) -> dict[str, Any]:
        """The next line reporting ``event`` (earlier lines of other kinds are skipped)."""
        while True:
            line = await self._stdout.receive_until(b"\n", 1 << 20)
            report: dict[str, Any] = json.loads(line)
            if report["event"] == event:
                return report


@pytest.mark.anyio
async def test_killed_publisher_reconnect_and_buffered_delivery(
    http_server: RunningServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The publisher process is SIGKILLed: the answerer reports ``disconnected``, buffers
    what is sent meanwhile, reconnects to a fresh offer of the restarted publisher (same
    username and key) and delivers the buffered messages to it, in order."""
    # aiortc notices a vanished peer only through failed ICE consent checks: by default
    # 6 failures 5 s apart (~30 s), then a jump to "closed".  Checking every 0.2 s and
    # giving up after 3 failures finds the dead peer in about two seconds.  Only this
    # process (the answerer) is affected, and monkeypatch restores the constants.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)
    username = unique("pub")
    seed = os.urandom(32).hex()
    service = f"{unique('chat')}:1.0.0"
    argv = [sys.executable, str(PUBLISHER), http_server.url, username, seed, service]
    argv.append(str(POLL_MS))
    processes: list[Process] = []

    async def start_publisher() -> PublisherProcess:
        log = (tmp_path / f"publisher{len(processes)}.err").open("wb")
        process = await anyio.open_process(argv, stdout=subprocess.PIPE, stderr=log)
        log.close()
        processes.append(process)
        publisher = PublisherProcess(process)
        await publisher.expect("ready")
        return publisher

    events: list[ev.Event] = []
    config = ConnectionConfig(
        connection_timeout_ms=3000,
        reconnect_backoff_base_ms=100,
        reconnect_backoff_max_ms=500,
        max_reconnect_attempts=0,
        ice_polling_interval_ms=100,
    )
    bob = Rondevu.connect(
        http_server.url,
        username=unique("bob"),
        ice_servers=[],
        host_addresses=LOOPBACK,
        connection_config=config,
    )
    try:
        with anyio.fail_after(TIMEOUT * 2):
            async with bob:
                first = await start_publisher()
                conn = await bob.connect_to_service(f"{service}@{username}")
                conn.on("*", events.append)
                await conn.wait_connected()
                assert (await first.expect("connected"))["offer_id"] == conn.offer_id
                conn.send("before")
                assert await first.expect("message") == {
                    "event": "message",
                    "type": "str",
                    "data": "before",
                }
                assert await conn.receive() == "echo:before"
                old_offer = conn.offer_id

                down = anyio.Event()
                conn.on("disconnected", lambda _: down.set())
                first.process.send_signal(signal.SIGKILL)
                await first.process.wait()
                await down.wait()
                assert not conn.is_connected

                conn.send("while down")
                conn.send(b"\x00down")
                buffered = [e.data for e in events if isinstance(e, ev.MessageBuffered)]
                assert buffered == ["while down", b"\x00down"]

                second = await start_publisher()
                await conn.wait_connected()
                assert conn.offer_id != old_offer
                assert await second.expect("message") == {
                    "event": "message",
                    "type": "str",
                    "data": "while down",
                }
                assert await second.expect("message") == {
                    "event": "message",
                    "type": "bytes",
                    "data": b"\x00down".hex(),
                }
                assert await conn.receive() == "echo:while down"
                assert await conn.receive() == b"echo:\x00down"
                names = [e.name for e in events]
                assert "reconnect:success" in names
                replayed = [e.data for e in events if isinstance(e, ev.MessageReplayed)]
                assert replayed == ["while down", b"\x00down"]
    finally:
        with anyio.CancelScope(shield=True):
            for process in processes:
                if process.returncode is None:
                    process.kill()
                await process.wait()
                await process.aclose()


# -- regression: per-call configs keep the client's ICE servers ---------------------------


@pytest.mark.anyio
async def test_per_call_config_keeps_the_clients_ice_servers(env: Env) -> None:
    """A ``connection_config`` given to connect_to_service or publish_service (built
    without ``ice``) must not bring back the default public STUN server."""
    assert ConnectionConfig().ice == DEFAULT_ICE_CONFIGURATION
    service = f"{unique('chat')}:1.0.0"
    with anyio.fail_after(TIMEOUT):
        async with env.client("alice") as alice, env.client("bob") as bob:
            assert alice.connection_config.ice == NO_ICE_SERVERS
            alice.publish_service(
                service, poll_interval_ms=POLL_MS, connection_config=ConnectionConfig()
            )
            assert alice._published is not None
            assert alice._published.connection.ice == NO_ICE_SERVERS
            await alice.start_filling()
            conn = await bob.connect_to_service(
                f"{service}@{alice.username}",
                connection_config=ConnectionConfig(reconnect_backoff_base_ms=50),
            )
            core = conn._core()
            assert core is not None
            assert core.config.ice == NO_ICE_SERVERS
            await conn.wait_connected()
            assert sdp_hosts(conn.peer_connection.localDescription.sdp) == {"127.0.0.1"}
