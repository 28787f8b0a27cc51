"""Connection set-up through the Rondevu client and our server, against the aiortc floor.

What is measured, per run, with a fresh answering client each time:

- **time**: from ``connect_to_service("svc:1.0.0@alice")`` to the answerer's
  ``connected`` (ICE up and data channel open), with the publisher's pool already full;
- **signaling HTTP requests** per established connection, counted at the transport
  (one POST /rpc each, however many batched calls it carries): the answerer's, from
  ``connect_to_service`` to ``connected``, and the publisher's, from the same start
  until its pool is full again (its answer polls plus the refill publish).

The server is ours, started as a child process (``rondevu_server.cli.serve``: uvicorn,
SQLite file in a temporary directory) on 127.0.0.1; both clients run in this process
with no ICE servers and host candidates on 127.0.0.1.  The floor is measured in the
same run by `bench_aiortc_floor.driver_run`: two aiortc peers exchanging SDP in memory,
no signaling at all.  The signaling floor is the protocol's minimum for one connection
with candidates embedded in the SDP: publishService, getService, answerOffer and the
poll that returns the answer (4 calls; batching may carry several in one request, so
requests can go below it).  One untimed warm-up run precedes each series.

The publisher polls for answers every ``--poll-interval-ms`` (0.18.9 default 1000), the
dominant term of the connect time: an answer waits on average half an interval.  Each
run starts at a random phase of that cycle (an untimed random pause), as a real peer
arrives.

    .venv/bin/python bench/bench_client_connect.py [--runs N] [--poll-interval-ms MS]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from rondevu import HttpTransport, Rondevu
from rondevu.transport import SignalingTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from bench.bench_aiortc_floor import driver_run

SERVICE = "bench:1.0.0"
REQUEST_FLOOR = 4
TIMEOUT = 30.0
BREAKDOWN: dict[str, Counter[str]] = {"answerer": Counter(), "publisher": Counter()}
"""Calls by method over the timed runs (warm-up included, subtracted at the end)."""


class CountingTransport:
    """Counts the HTTP requests (bodies) and RPC calls a real transport sends."""

    def __init__(self, inner: SignalingTransport) -> None:
        self.inner = inner
        self.requests = 0
        self.calls = 0
        self.methods: Counter[str] = Counter()

    async def send(self, body: Any) -> Any:
        self.requests += 1
        for call in body if isinstance(body, list) else [body]:
            self.calls += 1
            self.methods[call.get("method", "?")] += 1
        return await self.inner.send(body)

    async def aclose(self) -> None:
        await self.inner.aclose()


def client(url: str, username: str) -> tuple[Rondevu, CountingTransport]:
    transport = CountingTransport(HttpTransport(url))
    rondevu = Rondevu.connect(
        transport=transport, username=username, ice_servers=[], host_addresses=["127.0.0.1"]
    )
    return rondevu, transport


async def start_server(db: Path) -> tuple[Process, str]:
    """Our server in a child process on a free 127.0.0.1 port; its URL from its log."""
    code = (
        "from rondevu_server.cli import serve\n"
        "from rondevu_server.config import ServerConfig\n"
        f"serve(ServerConfig(host='127.0.0.1', port=0, db={str(db)!r}, log_level='info'))\n"
    )
    process = await anyio.open_process(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    lines = BufferedByteReceiveStream(process.stdout)
    with anyio.fail_after(TIMEOUT):
        while True:
            record = json.loads(await lines.receive_until(b"\n", 1 << 16))
            if record.get("msg") == "listening":
                port = record["port"]
            if record.get("msg") == "Application startup complete.":
                return process, f"http://127.0.0.1:{port}"


class Publisher:
    """alice's pool, and a way to wait for its publications."""

    def __init__(self, rondevu: Rondevu, transport: CountingTransport) -> None:
        self.rondevu = rondevu
        self.transport = transport
        self.published = 0
        """How many publishService calls succeeded so far."""
        self._changed = anyio.Event()
        rondevu.on("offers:published", self._on_published)

    def _on_published(self, _: object) -> None:
        self.published += 1
        self._changed.set()

    async def published_more_than(self, count: int) -> None:
        """Wait until more than ``count`` publications succeeded."""
        while self.published <= count:
            self._changed = anyio.Event()
            await self._changed.wait()


async def one_connection(
    url: str, alice: Publisher, n: int, poll_ms: int
) -> tuple[float, int, int, int, int]:
    """One timed set-up: seconds, then requests and calls of the answerer and of the
    publisher."""
    # Arrive at a random phase of the publisher's poll cycle, as a real peer does;
    # starting right after the refill would always wait for a whole interval.
    await anyio.sleep(random.uniform(0, poll_ms / 1000))
    bob, wire = client(url, f"bob-{n}-{time.monotonic_ns() % 1_000_000}")
    async with bob:
        requests_before, calls_before = alice.transport.requests, alice.transport.calls
        methods_before = alice.transport.methods.copy()
        published_before = alice.published
        start = time.perf_counter()
        conn = await bob.connect_to_service(f"{SERVICE}@{alice.rondevu.username}")
        await conn.wait_connected(TIMEOUT)
        elapsed = time.perf_counter() - start
        requests, calls, methods = wire.requests, wire.calls, wire.methods.copy()
        # The refill of the answered offer belongs to this connection.
        await alice.published_more_than(published_before)
        publisher_requests = alice.transport.requests - requests_before
        publisher_calls = alice.transport.calls - calls_before
        BREAKDOWN["answerer"] += methods
        BREAKDOWN["publisher"] += alice.transport.methods - methods_before
        await conn.close()
    await alice.rondevu.disconnect_all()
    return elapsed, requests, calls, publisher_requests, publisher_calls


def summary(ms: list[float]) -> str:
    ms = sorted(ms)
    p90 = statistics.quantiles(ms, n=10)[-1] if len(ms) >= 2 else ms[0]
    return f"median {statistics.median(ms):.1f} ms, p90 {p90:.1f} ms (min {ms[0]:.1f})"


async def main(runs: int, poll_ms: int) -> None:
    await driver_run()  # warm-up
    floor = [await driver_run() * 1000 for _ in range(runs)]
    with tempfile.TemporaryDirectory() as tmp:
        process, url = await start_server(Path(tmp) / "bench.sqlite")
        try:
            alice_client, alice_wire = client(url, f"alice-{time.monotonic_ns() % 1_000_000}")
            async with alice_client as alice:
                alice.publish_service(SERVICE, max_offers=1, poll_interval_ms=poll_ms)
                publisher = Publisher(alice, alice_wire)
                await alice.start_filling()
                await publisher.published_more_than(0)
                await one_connection(url, publisher, -1, poll_ms)  # warm-up
                for counter in BREAKDOWN.values():
                    counter.clear()
                results = [await one_connection(url, publisher, n, poll_ms) for n in range(runs)]
        finally:
            process.terminate()
            with anyio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()
    floor_after = [await driver_run() * 1000 for _ in range(runs)]
    floor_all = floor + floor_after
    times = [r[0] * 1000 for r in results]
    requests = [statistics.median(r[i] for r in results) for i in (1, 3)]
    calls = [statistics.median(r[i] for r in results) for i in (2, 4)]
    total_requests = statistics.median(r[1] + r[3] for r in results)
    total_calls = statistics.median(r[2] + r[4] for r in results)
    floor_median = statistics.median(floor_all)
    print(f"runs: {runs}, publisher poll interval: {poll_ms} ms, server: ours (SQLite)")
    print(f"connect_to_service -> connected: {summary(times)}")
    print(f"floor (two AiortcPeers, SDP in memory): {summary(floor_all)}")
    print(f"ratio (median / floor median): {statistics.median(times) / floor_median:.1f}x")
    print(
        f"signaling per connection (medians): HTTP requests {total_requests:g} "
        f"(answerer {requests[0]:g}, publisher {requests[1]:g}); RPC calls {total_calls:g} "
        f"(answerer {calls[0]:g}, publisher {calls[1]:g})"
    )
    for side, counter in BREAKDOWN.items():
        per = ", ".join(f"{m} {n / runs:.1f}" for m, n in sorted(counter.items()))
        print(f"  {side} calls per connection (mean): {per}")
    print(f"call floor (publishService, getService, answerOffer, poll): {REQUEST_FLOOR}")
    print(
        f"ratio: requests / floor {total_requests / REQUEST_FLOOR:.2f}x, "
        f"calls / floor {total_calls / REQUEST_FLOOR:.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs (default 10)")
    parser.add_argument(
        "--poll-interval-ms", type=int, default=1000, help="publisher's answer poll (ms)"
    )
    args = parser.parse_args()
    anyio.run(main, args.runs, args.poll_interval_ms)
