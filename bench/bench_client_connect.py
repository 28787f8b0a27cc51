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

Two series run, each on its own fresh server: **long polling on** (our server's
default: the publisher's poll is held until the answer arrives, urgent calls leave at
once) and the baseline, **long polling off** (the server started with
``long_poll_max_wait_ms=0``: it advertises nothing, so the client polls exactly as
0.18.9 does).  Without long polling the publisher polls for answers every
``--poll-interval-ms`` (0.18.9 default 1000), the dominant term of the connect time: an
answer waits on average half an interval.  Each run starts at a random phase of that
cycle (an untimed random pause), as a real peer arrives.

Requests are counted twice: **until connected** (both sides, from
``connect_to_service`` to the answerer's ``connected``; the publisher's poll that was
already held when the peer arrived is not counted, it was sent before), and **per
connection** (the publisher's until its pool is full again, as before).

With ``--phases`` each run of the long-polling series also prints where its time went:
the replies of getService and answerOffer, the publisher's last poll reply, and
connected (the rest: ICE, DTLS, SCTP).

    .venv/bin/python bench/bench_client_connect.py [--runs N] [--poll-interval-ms MS] [--phases]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from bench.bench_aiortc_floor import driver_run

SERVICE = "bench:1.0.0"
REQUEST_FLOOR = 4
TIMEOUT = 30.0
BREAKDOWN: dict[str, Counter[str]] = {"answerer": Counter(), "publisher": Counter()}
"""Calls by method over the timed runs (warm-up included, subtracted at the end)."""


class CountingTransport(HttpTransport):
    """An `HttpTransport` that counts the requests (bodies) and RPC calls it sends, and
    notes when each method's reply came back (same GET /, same timeouts)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.requests = 0
        self.calls = 0
        self.methods: Counter[str] = Counter()
        self.replied_at: dict[str, float] = {}

    async def send(self, body: Any) -> Any:
        self.requests += 1
        methods = [call.get("method", "?") for call in (body if isinstance(body, list) else [body])]
        for method in methods:
            self.calls += 1
            self.methods[method] += 1
        reply = await super().send(body)
        for method in methods:
            self.replied_at[method] = time.perf_counter()
        return reply


def client(url: str, username: str) -> tuple[Rondevu, CountingTransport]:
    transport = CountingTransport(url)
    rondevu = Rondevu.connect(
        transport=transport, username=username, ice_servers=[], host_addresses=["127.0.0.1"]
    )
    return rondevu, transport


async def start_server(db: Path, *, long_poll: bool) -> tuple[Process, str]:
    """Our server in a child process on a free 127.0.0.1 port; its URL from its log.
    ``long_poll=False`` switches the extension off (``long_poll_max_wait_ms=0``)."""
    hold = "" if long_poll else ", long_poll_max_wait_ms=0"
    code = (
        "from rondevu_server.cli import serve\n"
        "from rondevu_server.config import ServerConfig\n"
        f"serve(ServerConfig(host='127.0.0.1', port=0, db={str(db)!r}, log_level='info'{hold}))\n"
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


PHASES: list[dict[str, float]] = []


async def one_connection(
    url: str, alice: Publisher, n: int, poll_ms: int
) -> tuple[float, int, int, int, int, int]:
    """One timed set-up: seconds, then requests and calls of the answerer and of the
    publisher, then requests of both sides until connected."""
    # Arrive at a random phase of the publisher's poll cycle, as a real peer does;
    # starting right after the refill would always wait for a whole interval.
    await anyio.sleep(random.uniform(0, poll_ms / 1000))
    bob, wire = client(url, f"bob-{n}-{time.monotonic_ns() % 1_000_000}")
    async with bob:
        requests_before, calls_before = alice.transport.requests, alice.transport.calls
        methods_before = alice.transport.methods.copy()
        published_before = alice.published
        marks: dict[str, float] = {}
        start = time.perf_counter()
        conn = await bob.connect_to_service(f"{SERVICE}@{alice.rondevu.username}")
        await conn.wait_connected(TIMEOUT)
        end = time.perf_counter()
        elapsed = end - start
        until_connected = wire.requests + alice.transport.requests - requests_before
        requests, calls, methods = wire.requests, wire.calls, wire.methods.copy()
        marks["getService reply"] = wire.replied_at.get("getService", end)
        marks["answerOffer reply"] = wire.replied_at.get("answerOffer", end)
        marks["publisher's last poll reply"] = alice.transport.replied_at.get("poll", end)
        PHASES.append(
            {k: (v - start) * 1000 for k, v in marks.items()} | {"connected": elapsed * 1000}
        )
        # The refill of the answered offer belongs to this connection.
        await alice.published_more_than(published_before)
        publisher_requests = alice.transport.requests - requests_before
        publisher_calls = alice.transport.calls - calls_before
        BREAKDOWN["answerer"] += methods
        BREAKDOWN["publisher"] += alice.transport.methods - methods_before
        await conn.close()
    await alice.rondevu.disconnect_all()
    return elapsed, requests, calls, publisher_requests, publisher_calls, until_connected


def summary(ms: list[float]) -> str:
    ms = sorted(ms)
    p90 = statistics.quantiles(ms, n=10)[-1] if len(ms) >= 2 else ms[0]
    return f"median {statistics.median(ms):.1f} ms, p90 {p90:.1f} ms (min {ms[0]:.1f})"


async def series(
    runs: int, poll_ms: int, *, long_poll: bool
) -> list[tuple[float, int, int, int, int, int]]:
    """``runs`` timed connections on a fresh server with long polling on or off."""
    with tempfile.TemporaryDirectory() as tmp:
        process, url = await start_server(Path(tmp) / "bench.sqlite", long_poll=long_poll)
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
                PHASES.clear()
                results = [await one_connection(url, publisher, n, poll_ms) for n in range(runs)]
                waits = alice.long_poll_wait_ms
        finally:
            process.terminate()
            with anyio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()
    assert ((waits or 0) > 0) is long_poll, "the server's extension is not as asked"
    return results


def report(name: str, results: list[Any], runs: int, floor_median: float) -> float:
    times = [r[0] * 1000 for r in results]
    requests = [statistics.median(r[i] for r in results) for i in (1, 3)]
    calls = [statistics.median(r[i] for r in results) for i in (2, 4)]
    total_requests = statistics.median(r[1] + r[3] for r in results)
    total_calls = statistics.median(r[2] + r[4] for r in results)
    until_connected = statistics.median(r[5] for r in results)
    median: float = statistics.median(times)
    print(f"-- {name}")
    print(f"connect_to_service -> connected: {summary(times)}")
    print(f"ratio (median / floor median): {median / floor_median:.1f}x")
    print(f"HTTP requests until connected, both sides (median): {until_connected:g}")
    print(
        f"signaling per connection (medians): HTTP requests {total_requests:g} "
        f"(answerer {requests[0]:g}, publisher until refilled {requests[1]:g}); "
        f"RPC calls {total_calls:g} (answerer {calls[0]:g}, publisher {calls[1]:g})"
    )
    for side, counter in BREAKDOWN.items():
        per = ", ".join(f"{m} {n / runs:.1f}" for m, n in sorted(counter.items()))
        print(f"  {side} calls per connection (mean): {per}")
        counter.clear()
    return median


async def main(runs: int, poll_ms: int, phases: bool) -> None:
    await driver_run()  # warm-up
    floor = [await driver_run() * 1000 for _ in range(runs)]
    on = await series(runs, poll_ms, long_poll=True)
    on_phases = list(PHASES)
    on_breakdown = {side: counter.copy() for side, counter in BREAKDOWN.items()}
    for counter in BREAKDOWN.values():
        counter.clear()
    off = await series(runs, poll_ms, long_poll=False)
    off_breakdown = {side: counter.copy() for side, counter in BREAKDOWN.items()}
    floor_after = [await driver_run() * 1000 for _ in range(runs)]
    floor_median = statistics.median(floor + floor_after)
    print(f"runs: {runs} per series, server: ours (SQLite file, child process)")
    print(f"floor (two AiortcPeers, SDP in memory): {summary(floor + floor_after)}")
    BREAKDOWN.update(on_breakdown)
    median_on = report("long polling on (held poll, urgent calls at once)", on, runs, floor_median)
    BREAKDOWN.update(off_breakdown)
    median_off = report(
        f"baseline: long polling off (plain polls every {poll_ms} ms, as 0.18.9)",
        off,
        runs,
        floor_median,
    )
    print(f"speed-up of long polling over the baseline: {median_off / median_on:.1f}x")
    print(f"call floor (publishService, getService, answerOffer, poll): {REQUEST_FLOOR}")
    if phases:
        print("-- where the time went, long polling on (ms from connect_to_service, median):")
        for key in on_phases[0]:
            print(f"  {key}: {statistics.median(p[key] for p in on_phases):.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs (default 10)")
    parser.add_argument(
        "--poll-interval-ms", type=int, default=1000, help="publisher's answer poll (ms)"
    )
    parser.add_argument("--phases", action="store_true", help="print where the time went")
    args = parser.parse_args()
    anyio.run(main, args.runs, args.poll_interval_ms, args.phases)
