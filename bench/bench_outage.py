"""A long outage, the reconnection backoff at its cap: how soon does the first message
sent during the outage reach the publisher once it is back?  (Issue #10.)

Everything runs in this process on 127.0.0.1: an in-process signaling server, a
publisher (alice) and a connecting peer (bob), no ICE servers.  Bob is connected; alice
stops publishing (her offers are withdrawn and her connection closes); bob sends a line,
which his session keeps; his attempts fail (``Service not found``) until the backoff
delay reaches its cap (``--cap-ms``: 8 s by default, so a run takes well under a
minute; the library's default cap is 30 s); then alice publishes again and the time
until bob's line reaches her is measured.

Two series: **the defaults**, where the next attempt comes only when the capped delay
runs out (so the figure is up to the cap), and **with a probe**
(``reconnect_probe_interval_ms``: while a long delay runs, a lone getService looks for
the service that often, and an answer starts the attempt at once).  Baseline, from the
same run: a new peer (carol) connecting to the restored publisher and getting a line
through, which is the least any recovery can cost.  Goal: <= 1 s.

    .venv/bin/python bench/bench_outage.py [--cap-ms 8000] [--probe-ms 500] [--runs 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from rondevu import ConnectionConfig, DurableConnection, InProcessTransport, Rondevu
from rondevu_core import events as ev
from rondevu_core.rules.signing import KeyPair
from rondevu_server.config import ServerConfig
from rondevu_server.server import RondevuServer

SERVICE = "outage:1.0.0"
BOUND_S = 120.0
"""No wait of a run lasts longer than this."""


def _client(server: RondevuServer, name: str, seed: int, config: ConnectionConfig) -> Rondevu:
    return Rondevu.connect(
        transport=InProcessTransport(server),
        username=name,
        keypair=KeyPair.from_seed(bytes([seed]) * 32),
        ice_servers=[],
        host_addresses=["127.0.0.1"],
        connection_config=config,
    )


async def _line_arrives(incoming: AsyncIterator[DurableConnection], text: str) -> None:
    """Until some incoming connection of the publisher delivers ``text``."""
    async with anyio.create_task_group() as group:

        async def watch(conn: DurableConnection) -> None:
            while True:
                if await conn.receive() == text:
                    group.cancel_scope.cancel()

        async for conn in incoming:
            group.start_soon(watch, conn)


async def one_run(config: ConnectionConfig, cap_ms: int) -> tuple[float, float]:
    """(seconds from the publisher's return to bob's line, the new-peer baseline)."""
    server = await RondevuServer.open(ServerConfig())
    try:
        async with (
            _client(server, "alice", 1, config) as alice,
            _client(server, "bob", 2, config) as bob,
        ):
            alice.publish_service(SERVICE, max_offers=1, poll_interval_ms=50)
            await alice.start_filling()
            conn = await bob.connect_to_service(f"{SERVICE}@alice")
            with anyio.fail_after(BOUND_S):
                await conn.wait_connected()
            capped = anyio.Event()

            def on_scheduled(event: ev.Event) -> None:
                if isinstance(event, ev.ReconnectScheduled) and event.delay >= cap_ms * 0.85:
                    capped.set()  # within the jitter of the cap

            conn.on("reconnect:scheduled", on_scheduled)
            await alice.stop_filling()
            conn.send("sent during the outage")
            with anyio.fail_after(BOUND_S):
                await capped.wait()
            back = time.perf_counter()
            await alice.start_filling()
            with anyio.fail_after(BOUND_S):
                await _line_arrives(alice.incoming(), "sent during the outage")
            recovered = time.perf_counter() - back
            async with _client(server, "carol", 3, config) as carol:
                start = time.perf_counter()
                fresh = await carol.connect_to_service(f"{SERVICE}@alice")
                with anyio.fail_after(BOUND_S):
                    await fresh.wait_connected()
                    fresh.send("a new peer")
                    await _line_arrives(alice.incoming(), "a new peer")
                baseline = time.perf_counter() - start
            await conn.close()
            return recovered, baseline
    finally:
        await server.aclose()


async def main(cap_ms: int, probe_ms: int, runs: int) -> None:
    defaults = ConnectionConfig(max_reconnect_attempts=0, reconnect_backoff_max_ms=cap_ms)
    probing = dataclasses.replace(defaults, reconnect_probe_interval_ms=probe_ms)
    print(
        f"long outage, backoff at its cap ({cap_ms} ms): publisher back -> first message "
        f"sent during the outage arrives (median of {runs}; goal <= 1 s)"
    )
    for label, config in (("defaults (no probe)", defaults), (f"probe {probe_ms} ms", probing)):
        figures = [await one_run(config, cap_ms) for _ in range(runs)]
        recovered = statistics.median(f[0] for f in figures)
        baseline = statistics.median(f[1] for f in figures)
        print(
            f"   {label}: {recovered:.2f} s | baseline, a new peer connects and sends: "
            f"{baseline:.2f} s ({recovered / baseline:.1f}x)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap-ms", type=int, default=8000, help="the backoff's cap")
    parser.add_argument("--probe-ms", type=int, default=500, help="the probe's interval")
    parser.add_argument("--runs", type=int, default=3, help="runs per series (median kept)")
    args = parser.parse_args()
    anyio.run(main, args.cap_ms, args.probe_ms, args.runs)
