"""The session layer's costs and timings, each against a baseline measured in the same run.

Everything runs in this process on 127.0.0.1: an in-process signaling server, two
clients (a publisher and a connecting peer), no ICE servers.

1. **Throughput**, 16 KiB and 64 KiB messages, through our API (``send_wait`` on one
   side, ``receive`` on the other) with the session layer and without it, as a ratio
   to raw aiortc data channels between two peers with the same flow control (the
   sender waits for ``bufferedamountlow`` at the same 1 MiB mark).  Goal: >= 0.9.
2. **Vanish to disconnected**: both peer connections' sockets silenced (nothing closed,
   as with a pulled cable); time until the connecting side reports ``disconnected``.
   Goal with the defaults: <= 3 s.  Baseline: the layer off, where only aiortc's ICE
   consent checks can tell (~30 s); bounded by ``--baseline-bound`` and printed as
   "> N s" when that runs out.
3. **Loss noticed to first replayed message**: after the loss above (the link itself
   usable again at once: the new peer connections are not silenced), how long until
   the first message sent while down reaches the publisher, with the defaults.
   Baseline: a bare aiortc connection set-up in the same run.  Not measured: a long
   outage with the backoff at its cap (up to 30 s between attempts).
4. **Sender memory with a stalled receiver**: the link silenced, a sender keeps calling
   ``send_wait`` with 64 KiB messages; the bytes the session holds (and the Python heap
   growth, tracemalloc) against the configured window.  Baseline: the layer off and the
   plain ``send``, which takes everything (bounded by ``--plain-bytes``).

    .venv/bin/python bench/bench_session.py [--megabytes N] [--baseline-bound S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel

from bench.bench_aiortc_floor import driver_run as aiortc_floor_run
from rondevu import ConnectionConfig, DurableConnection, InProcessTransport, Rondevu
from rondevu_aiortc import AiortcPeer
from rondevu_core.delivery import SessionConfig
from rondevu_core.inputs import ChannelMessage, ChannelOpen, PeerInput
from rondevu_core.rules.ice import NO_ICE_SERVERS
from rondevu_core.rules.signing import KeyPair
from rondevu_server.config import ServerConfig
from rondevu_server.server import RondevuServer

LOW_WATER = 1024 * 1024
FAST = ConnectionConfig(reconnect_backoff_base_ms=100, reconnect_backoff_max_ms=400)
PLAIN = dataclasses.replace(FAST, session=None)


# -- helpers ------------------------------------------------------------------------------


def _silence(pc: Any) -> None:
    """Drop everything ``pc``'s UDP sockets send (a pulled cable: nothing is closed)."""
    connection = pc.sctp.transport.transport._connection
    for protocol in connection._protocols:
        protocol.transport.sendto = lambda *_a, **_k: None


@contextlib.asynccontextmanager
async def pair(
    config: ConnectionConfig, service: str
) -> AsyncIterator[tuple[DurableConnection, DurableConnection]]:
    """(connecting side, publisher side), connected, on an in-process server."""
    server = await RondevuServer.open(ServerConfig())
    try:
        options: dict[str, Any] = {
            "ice_servers": [],
            "host_addresses": ["127.0.0.1"],
            "connection_config": config,
        }
        async with (
            Rondevu.connect(
                transport=InProcessTransport(server),
                username="alice",
                keypair=KeyPair.from_seed(b"\x01" * 32),
                **options,
            ) as alice,
            Rondevu.connect(
                transport=InProcessTransport(server),
                username="bob",
                keypair=KeyPair.from_seed(b"\x02" * 32),
                **options,
            ) as bob,
        ):
            alice.publish_service(service, max_offers=1, poll_interval_ms=50)
            await alice.start_filling()
            conn = await bob.connect_to_service(f"{service}@alice")
            await conn.wait_connected(20)
            theirs = await anext(alice.incoming())
            await theirs.wait_connected(20)
            yield conn, theirs
            await conn.close()
    finally:
        await server.aclose()


# -- 1. throughput ------------------------------------------------------------------------


async def raw_throughput(size: int, total: int) -> float:
    """MB/s between two bare aiortc peers (sender paced by ``bufferedamountlow``)."""
    opened = asyncio.Event()
    received = [0]
    done = asyncio.Event()
    count = total // size

    def on_input(event: PeerInput) -> None:
        if isinstance(event, ChannelMessage):
            received[0] += 1
            if received[0] == count:
                done.set()

    def on_sender_input(event: PeerInput) -> None:
        if isinstance(event, ChannelOpen):
            opened.set()

    a = AiortcPeer(ice=NO_ICE_SERVERS, on_input=on_sender_input, host_addresses=["127.0.0.1"])
    b = AiortcPeer(ice=NO_ICE_SERVERS, on_input=on_input, host_addresses=["127.0.0.1"])
    try:
        a.create_data_channel("bench")
        answer = await b.accept_offer(await a.create_offer())
        assert answer is not None
        await a.set_remote_answer(answer)
        channel = a.raw_data_channel
        assert channel is not None
        await asyncio.wait_for(opened.wait(), 10)
        channel.bufferedAmountLowThreshold = LOW_WATER
        low = asyncio.Event()
        channel.on("bufferedamountlow", low.set)
        payload = bytes(size)
        start = time.perf_counter()
        for _ in range(count):
            while channel.bufferedAmount > LOW_WATER:
                low.clear()
                await low.wait()
            channel.send(payload)
        await asyncio.wait_for(done.wait(), 120)
        return count * size / (time.perf_counter() - start) / 1e6
    finally:
        await a.close()
        await b.close()


async def api_throughput(config: ConnectionConfig, size: int, total: int) -> float:
    """MB/s through our API: ``send_wait`` -> ``receive``."""
    count = total // size
    async with pair(config, "bench:1.0.0") as (conn, theirs):
        payload = bytes(size)
        start = time.perf_counter()

        async def consume() -> None:
            for _ in range(count):
                await theirs.receive()

        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            for _ in range(count):
                await conn.send_wait(payload)
        return count * size / (time.perf_counter() - start) / 1e6


# -- 2./3. vanish -> disconnected, loss -> first replayed ---------------------------------


async def vanish(config: ConnectionConfig, bound: float) -> tuple[float | None, float | None]:
    """(seconds to ``disconnected``, seconds from then to the first replayed message at
    the publisher), None where ``bound`` ran out."""
    async with pair(config, "vanish:1.0.0") as (conn, theirs):
        down = anyio.Event()
        conn.on("disconnected", lambda _e: down.set())
        _silence(conn.peer_connection)
        _silence(theirs.peer_connection)
        start = time.perf_counter()
        with anyio.move_on_after(bound):
            await down.wait()
        if not down.is_set():
            return None, None
        detected = time.perf_counter()
        conn.send("sent while down")
        with anyio.move_on_after(bound):
            while True:
                message = await theirs.receive()
                if message == "sent while down":
                    return detected - start, time.perf_counter() - detected
        return detected - start, None


# -- 4. sender memory ---------------------------------------------------------------------


async def stalled_sender(config: ConnectionConfig, *, seconds: float, limit: int) -> dict[str, int]:
    """Silence the link, then send 64 KiB messages for ``seconds`` (``send_wait`` with
    the layer, plain ``send`` up to ``limit`` bytes without); what the sender holds."""
    size = 64 * 1024
    async with pair(config, "memory:1.0.0") as (conn, theirs):
        _silence(conn.peer_connection)
        _silence(theirs.peer_connection)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        sent = 0
        with anyio.move_on_after(seconds):
            while sent < limit:
                payload = bytes(size)  # a fresh object: what the sender must keep is real
                if config.session is None:
                    conn.send(payload)
                    await anyio.lowlevel.checkpoint()
                else:
                    await conn.send_wait(payload)
                sent += size
        heap = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        core = conn._core()
        held = 0 if core is None or core.delivery is None else core.delivery.unacked_bytes
        return {"accepted": sent, "session_holds": held, "heap_growth": heap}


# -- main ---------------------------------------------------------------------------------


def _s(value: float | None, bound: float) -> str:
    return f"> {bound:.0f} s" if value is None else f"{value:.2f} s"


async def main(megabytes: int, bound: float, plain_bytes: int, rounds: int) -> None:
    total = megabytes * 1024 * 1024
    print(
        f"1. throughput, {megabytes} MiB per run, best of {rounds} interleaved rounds "
        "(MB/s; ratio to raw aiortc)"
    )
    await raw_throughput(16 * 1024, 4 * 1024 * 1024)  # warm-up
    for size in (16 * 1024, 64 * 1024):
        best = {"raw": 0.0, "plain": 0.0, "session": 0.0}
        for _ in range(rounds):  # interleaved, so a busy moment hurts all three alike
            best["raw"] = max(best["raw"], await raw_throughput(size, total))
            best["plain"] = max(best["plain"], await api_throughput(PLAIN, size, total))
            best["session"] = max(best["session"], await api_throughput(FAST, size, total))
        raw, plain, session = best["raw"], best["plain"], best["session"]
        print(
            f"   {size // 1024} KiB: raw aiortc {raw:.1f} | ours plain {plain:.1f} "
            f"({plain / raw:.2f}) | ours session {session:.1f} ({session / raw:.2f})"
        )

    print("2. peer vanishes (sockets silenced) -> disconnected")
    hb = SessionConfig()
    layered, replay = await vanish(ConnectionConfig(), bound)  # the defaults
    plain_down, _ = await vanish(ConnectionConfig(session=None), bound)
    print(
        f"   session layer (heartbeat {hb.heartbeat_interval_ms} ms / timeout "
        f"{hb.heartbeat_timeout_ms} ms): {_s(layered, bound)} | layer off (baseline, aiortc "
        f"consent): {_s(plain_down, bound)}"
    )
    floor = await aiortc_floor_run()
    print("3. loss noticed -> first message sent while down reaches the publisher")
    print(
        f"   session layer, defaults: {_s(replay, bound)} (first attempt at once after a "
        f"heartbeat loss, then signaling + set-up) | baseline, bare aiortc set-up: "
        f"{floor:.2f} s"
    )

    print("4. sender memory, link silenced, 64 KiB messages for 2 s (before the heartbeat ends it)")
    window = SessionConfig(window_bytes=4 * 1024 * 1024)
    layered_mem = await stalled_sender(
        dataclasses.replace(FAST, session=window), seconds=2, limit=plain_bytes
    )
    plain_mem = await stalled_sender(PLAIN, seconds=2, limit=plain_bytes)
    mib = 1024 * 1024
    print(
        f"   session layer, window {window.window_bytes / mib:.0f} MiB: accepted "
        f"{layered_mem['accepted'] / mib:.1f} MiB, held {layered_mem['session_holds'] / mib:.1f}"
        f" MiB, heap +{layered_mem['heap_growth'] / mib:.1f} MiB"
    )
    print(
        f"   baseline, layer off, plain send: accepted {plain_mem['accepted'] / mib:.1f} MiB, "
        f"heap +{plain_mem['heap_growth'] / mib:.1f} MiB (bounded at {plain_bytes / mib:.0f} MiB)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=16, help="MiB per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (best kept)")
    parser.add_argument(
        "--baseline-bound", type=float, default=12.0, help="seconds before giving up a wait"
    )
    parser.add_argument(
        "--plain-bytes", type=int, default=64 * 1024 * 1024, help="plain sender's cap"
    )
    args = parser.parse_args()
    anyio.run(main, args.megabytes, args.baseline_bound, args.plain_bytes, args.rounds)
