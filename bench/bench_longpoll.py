"""Long polling on our server: wake-up latency, and what idle held calls cost.

Real ``rondevu serve`` processes (the shipped CLI, uvloop) on 127.0.0.1, driven over
HTTP from this process.  Two measurements, each with its baseline from the same run:

- **wake-up latency**: a poll of Alice is held (``waitMs`` 25 s) on one process; Bob's
  ``answerOffer`` is sent (to the same process, or to another process on the same
  database); timed from sending the answer to the held poll's reply.  Median over
  ``--runs``; baseline: the round trip of one plain ``poll`` on the same server.  Cases:
  one process (SQLite file), two processes on one SQLite file, and two processes on
  PostgreSQL (when RONDEVU_TEST_POSTGRES_DSN is set).  Before each timed answer the
  poll is known to be held: its batch also claims a fresh name, which the other
  connection waits to see.
- **idle cost**: ``--services`` users each publish a service and then keep one poll
  held at all times (re-sent as soon as it returns), on one server process (PostgreSQL
  if set, else a SQLite file), for ``--idle-seconds``: the server's CPU (share of one
  core, from /proc) and memory (RSS) while they wait.  Baselines in the same run: the
  same process with nothing held (CPU and RSS), and the same users polling once a
  second without ``waitMs`` (what a 0.5.4 server costs them).

    .venv/bin/python bench/bench_longpoll.py [--runs 50] [--services 1000] [--idle-seconds 30]

Not run by CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from bench.server_bench import Peer, cpu_seconds, fake_sdp, now_ms, start_server

WAIT_MS = 25_000


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` (KiB, Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raw_post(body: Any) -> bytes:
    """One whole HTTP request for ``body``, sent with one write."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return (
        b"POST /rpc HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(data), data)
    )


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


class Connection:
    """A bare keep-alive HTTP/1.1 connection (TCP_NODELAY, one write per request): the
    cheapest client, so that the figures are the server's, not an HTTP library's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def post(self, body: Any) -> Any:
        self.writer.write(raw_post(body))
        return json.loads(await read_reply(self.reader))

    def close(self) -> None:
        self.writer.close()


async def ok(http: httpx.AsyncClient | Connection, body: Any) -> Any:
    if isinstance(http, Connection):
        reply = await http.post(body)
    else:
        reply = (await http.post("/rpc", json=body)).json()
    assert reply["success"], reply
    return reply["result"]


async def publish(http: httpx.AsyncClient | Connection, peer: Peer, sdp_size: int = 400) -> str:
    fqn = f"lp{uuid.uuid4().hex[:8]}:1.0.0@{peer.username}"
    params = {"serviceFqn": fqn, "offers": [{"sdp": fake_sdp(sdp_size)}], "ttl": 600_000}
    result = await ok(http, peer.call("publishService", params, now_ms()))
    return str(result["offers"][0]["offerId"])


# -- wake-up latency --------------------------------------------------------------------


async def wake_latency(held_url: str, write_url: str, runs: int) -> tuple[list[float], list[float]]:
    """Seconds from sending an answer to the held poll's reply, and plain poll round
    trips, ``runs`` of each (after one untimed warm-up)."""
    latencies: list[float] = []
    round_trips: list[float] = []
    holder, writer = await Connection.open(held_url), await Connection.open(write_url)
    try:
        for run in range(runs + 1):
            alice, bob, marker = (Peer(f"{n}{uuid.uuid4().hex[:10]}") for n in "abm")
            offer = await publish(writer, alice)
            plain = alice.call("poll", {}, now_ms())
            start = time.perf_counter()
            await ok(holder, plain)
            round_trip = time.perf_counter() - start
            batch = [
                alice.call("poll", {"since": 0, "waitMs": WAIT_MS}, now_ms()),
                marker.call("poll", {}, now_ms()),
            ]
            held = asyncio.ensure_future(holder.post(batch))
            probe = bob.call("getUser", {"username": marker.username}, now_ms())
            while (await ok(writer, probe))["available"]:
                pass  # the marker's claim shows the poll is held: no sleeping
            answer = bob.call("answerOffer", {"offerId": offer, "sdp": "answer"}, now_ms())
            start = time.perf_counter()
            answered = asyncio.ensure_future(ok(writer, answer))
            reply = await held
            latency = time.perf_counter() - start
            await answered
            assert reply[0]["result"]["answers"][0]["offerId"] == offer
            if run:  # the first run warms both servers up
                latencies.append(latency)
                round_trips.append(round_trip)
    finally:
        holder.close()
        writer.close()
    return latencies, round_trips


def report_latency(label: str, latencies: list[float], round_trips: list[float]) -> None:
    wake = statistics.median(latencies) * 1000
    plain = statistics.median(round_trips) * 1000
    spread = sorted(latencies)
    p90 = spread[int(0.9 * (len(spread) - 1))] * 1000
    print(
        f"{label:34s} answer -> held poll: median {wake:6.2f} ms (p90 {p90:6.2f})   "
        f"plain poll round trip: median {plain:5.2f} ms   ratio {wake / plain:5.2f}"
    )


# -- idle cost --------------------------------------------------------------------------


async def keep_polling(port: int, request: bytes, pause: float, counter: list[int]) -> None:
    """One client on its own connection: send ``request``, read the reply, again after
    ``pause`` seconds (0: at once), until cancelled."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            writer.write(request)
            reply = await read_reply(reader)
            assert b'"success":true' in reply, reply
            counter[0] += 1
            if pause:
                await asyncio.sleep(pause)
    finally:
        writer.close()


async def measure(
    pid: int,
    seconds: float,
    clients: Callable[[], Awaitable[None]] | None = None,
    counter: list[int] | None = None,
) -> tuple[float, int, float]:
    """CPU share of one core over ``seconds``, peak RSS (KiB) of process ``pid``, and
    requests answered per second (``counter``), while ``clients`` run (cancelled at
    the end)."""
    counter = counter if counter is not None else [0]
    task = asyncio.ensure_future(clients()) if clients is not None else None
    await asyncio.sleep(2)  # let the clients connect and settle before measuring
    before, start, answered = cpu_seconds(pid), time.monotonic(), counter[0]
    peak = rss_kib(pid)
    while time.monotonic() - start < seconds:
        await asyncio.sleep(0.5)
        peak = max(peak, rss_kib(pid))
    after, elapsed, answered = cpu_seconds(pid), time.monotonic() - start, counter[0] - answered
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert before is not None
    assert after is not None
    return (after - before) / elapsed, peak, answered / elapsed


async def idle_cost(url: str, pid: int, services: int, seconds: float) -> None:
    port = int(url.rsplit(":", 1)[1])
    peers = [Peer(f"idle{n}-{uuid.uuid4().hex[:6]}") for n in range(services)]
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for start in range(0, services, 50):
            await asyncio.gather(*(publish(http, p) for p in peers[start : start + 50]))
    rss_start = rss_kib(pid)

    async def polling(params: dict[str, Any], pause: float) -> tuple[float, int, float]:
        counter = [0]

        async def run() -> None:
            requests = [raw_post(p.call("poll", params, now_ms())) for p in peers]
            await asyncio.gather(*(keep_polling(port, r, pause, counter) for r in requests))

        return await measure(pid, seconds, run, counter)

    idle = await measure(pid, seconds)
    held = await polling({"waitMs": WAIT_MS}, 0)
    plain = await polling({}, 1.0)
    print(
        f"{services} published services, {seconds:.0f} s each, one server process "
        f"(RSS {rss_start / 1024:.1f} MiB after publishing):"
    )
    rows = [
        ("nothing held (baseline)", idle),
        (f"each holding a poll (waitMs {WAIT_MS})", held),
        ("each polling once a second (0.5.4 style)", plain),
    ]
    for label, (cpu, peak, rate) in rows:
        print(
            f"  {label:42s} server CPU {cpu:6.1%} of a core   peak RSS {peak / 1024:6.1f} MiB"
            f"   {rate:7.1f} requests/s"
        )
    print(
        f"  held polls cost {held[0] - idle[0]:+.1%} of a core and "
        f"{(held[1] - idle[1]) / services:+.1f} KiB each over the idle server; "
        f"1 s polling costs {plain[0] - idle[0]:+.1%}"
    )


# -- main -------------------------------------------------------------------------------


def stop_all(procs: list[Any]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)


def drop_schema(dsn: str, schema: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()

    asyncio.run(drop())


def two_processes(db: str, schema: str) -> tuple[list[Any], list[str]]:
    procs, urls = [], []
    for _ in range(2):
        proc, port, _ = start_server(db, schema)
        procs.append(proc)
        urls.append(f"http://127.0.0.1:{port}")
    return procs, urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    dsn = os.environ.get("RONDEVU_TEST_POSTGRES_DSN")
    print(f"{os.cpu_count()} CPUs; medians over {args.runs} runs")
    with tempfile.TemporaryDirectory() as directory:
        db = os.path.join(directory, "one.db")
        proc, port, _ = start_server(db, "")
        try:
            url = f"http://127.0.0.1:{port}"
            label = "one process, SQLite file"
            report_latency(label, *asyncio.run(wake_latency(url, url, args.runs)))
        finally:
            stop_all([proc])
        procs, urls = two_processes(os.path.join(directory, "two.db"), "")
        try:
            label = "two processes, one SQLite file"
            report_latency(label, *asyncio.run(wake_latency(urls[0], urls[1], args.runs)))
        finally:
            stop_all(procs)
        if dsn:
            schema = f"rdv_bench_{uuid.uuid4().hex[:8]}"
            procs, urls = two_processes(dsn, schema)
            try:
                label = "two processes, one PostgreSQL"
                report_latency(label, *asyncio.run(wake_latency(urls[0], urls[1], args.runs)))
            finally:
                stop_all(procs)
                drop_schema(dsn, schema)
        else:
            print("two processes, one PostgreSQL: skipped (RONDEVU_TEST_POSTGRES_DSN not set)")

        if dsn:
            db, schema = dsn, f"rdv_bench_{uuid.uuid4().hex[:8]}"
        else:
            db, schema = os.path.join(directory, "idle.db"), ""
        proc, port, _ = start_server(db, schema)
        try:
            url = f"http://127.0.0.1:{port}"
            asyncio.run(idle_cost(url, proc.pid, args.services, args.idle_seconds))
        finally:
            stop_all([proc])
            if schema:
                drop_schema(db, schema)


if __name__ == "__main__":
    main()
