"""Signaling server throughput on a realistic call mix, next to its own ceiling.

Starts ``rondevu serve`` (the shipped CLI: uvicorn + uvloop + httptools, one process;
``RONDEVU_*`` variables in the environment reach it, e.g. RONDEVU_VERIFY_THREADS=1)
on 127.0.0.1, seeds it over HTTP, then drives it with ``wrk`` (a C load generator, so
the client is not the bottleneck) replaying pre-signed single-call bodies.  Per 100
calls: 30 poll by offer owners, 25 getIceCandidates, 15 direct getService, 10 discovery
getService (half random, half paginated), 10 addIceCandidates, 5 answerOffer on fresh
offers, 5 publishService with a ~2.5 KB SDP.  The ceiling is ``GET /health`` on the same
process in the same run.  Prints calls/s, p50/p99 latency, the success ratio and the
ratio to the ceiling, for SQLite and (when RONDEVU_TEST_POSTGRES_DSN is set) PostgreSQL.

Poll bodies carry their ``since`` cursor as the time of the owner's previous poll (one
second ago, filled in by wrk: poll's cursor is not signed), as a real client's do.  Each
backend's report ends with the bound the signature check alone puts on the ratio: one
process spending the ceiling's server CPU per request plus one Ed25519 check per call
(timed here) could reach no more than that fraction of the ceiling, whatever else it did
or did not do.

    apt-get install -y wrk
    .venv/bin/python bench/server_bench.py [--seconds 10] [--connections 32] [--processes N]
        [--workers N]

``--processes N`` starts N separate ``rondevu serve`` processes on one port;
``--workers N`` starts one ``rondevu serve --workers N`` (the supervisor does the same
with its N workers); the servers' CPU counts every server process either way.

Not run by CI.  Bodies are signed at start and stay valid for 5 minutes, so each
backend's seeding and runs must fit in that window (they take well under a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from rondevu_core.rules.signing import KeyPair, build_message, expected_context, verify_signature

MIX = (
    ["poll"] * 30
    + ["getIce"] * 25
    + ["direct"] * 15
    + ["random"] * 5
    + ["paged"] * 5
    + ["addIce"] * 10
    + ["answer"] * 5
    + ["publish"] * 5
)

# poll's ``since`` is not signed (its message has no context), so wrk fills it in when
# it sends the body: a real owner passes the time of its previous poll, not the time the
# benchmark started (which would make every poll return more candidates than the last).
POLL_SINCE = 7_777_777_777_777
WRK_SCRIPT = r"""
local path = os.getenv("BENCH_BODIES")
local POLL_SINCE = "__POLL_SINCE__"
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  thread:set("nthreads", 0)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  bodies = {}
  local k = tonumber(args[1]) or 1
  local n = 0
  for line in io.lines(path) do
    if n % k == id then table.insert(bodies, line) end
    n = n + 1
  end
  idx = 0
  ok = 0
  bad = 0
  hdrs = {["Content-Type"] = "application/json"}
end
function request()
  idx = idx + 1
  if idx > #bodies then idx = 1 end
  local body = bodies[idx]
  if string.find(body, POLL_SINCE, 1, true) then
    -- an owner polling every second asks for what arrived since its previous poll
    body = string.gsub(body, POLL_SINCE, string.format("%d", (os.time() - 1) * 1000))
  end
  return wrk.format("POST", "/rpc", hdrs, body)
end
function response(status, headers, body)
  if status == 200 and string.find(body, '"success":true', 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local good, failed = 0, 0
  for _, t in ipairs(threads) do
    good = good + t:get("ok")
    failed = failed + t:get("bad")
  end
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, good, failed,
    latency:percentile(50), latency:percentile(99)))
end
"""

WRK_SCRIPT = WRK_SCRIPT.replace("__POLL_SINCE__", str(POLL_SINCE))

CEILING_SCRIPT = r"""
function done(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.requests, 0,
    latency:percentile(50), latency:percentile(99)))
end
"""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Peer:
    def __init__(self, name: str) -> None:
        self.username = name
        self.keypair = KeyPair.generate(os.urandom)

    def call(self, method: str, params: dict[str, Any], ts: int) -> dict[str, Any]:
        message = build_message(method, self.username, expected_context(method, params), ts)
        return {
            "method": method,
            "message": message,
            "signature": self.keypair.sign(message),
            "publicKey": self.keypair.public_key,
            "params": params,
        }


def fake_sdp(size: int = 2500) -> str:
    head = f"v=0\r\no=- {uuid.uuid4().int % 10**18} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    line = "a=candidate:1 1 udp 2122260223 192.168.1.20 54321 typ host generation 0\r\n"
    return head + line * max(0, (size - len(head)) // len(line))


@dataclass
class Outcome:
    calls: int
    ok: int
    failed: int
    p50_ms: float
    p99_ms: float
    seconds: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


def signature_check_us(samples: int = 3000) -> float:
    """What one call's signature check costs here (µs): the server's own check of a
    message shaped like the mix's, timed in this process."""
    peer = Peer("timing")
    body = peer.call("getIceCandidates", {"offerId": "x" * 64, "since": 0}, now_ms())
    args = (body["publicKey"], body["message"], body["signature"])
    assert verify_signature(*args)
    start = time.perf_counter()
    for _ in range(samples):
        verify_signature(*args)
    return (time.perf_counter() - start) * 1e6 / samples


def run_wrk(url: str, script: str, seconds: int, connections: int, env: dict[str, str]) -> Outcome:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", handle.name, url, "--", "1"],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=seconds + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    calls, ok, failed, p50, p99 = (int(v) for v in line.split()[1:])
    return Outcome(calls, ok, failed, p50 / 1000, p99 / 1000, float(seconds))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def servers_cpu(pids: list[int]) -> float | None:
    """CPU seconds of all server processes so far, when known."""
    times = [cpu_seconds(pid) for pid in pids]
    return None if None in times else sum(t for t in times if t is not None)


def measured(
    pids: list[int], url: str, script: str, seconds: int, connections: int, env: dict[str, str]
) -> tuple[Outcome, float | None]:
    """One wrk run and the servers' CPU time per request during it (µs), when known."""
    before = servers_cpu(pids)
    outcome = run_wrk(url, script, seconds, connections, env)
    after = servers_cpu(pids)
    if before is None or after is None or not outcome.calls:
        return outcome, None
    return outcome, (after - before) * 1e6 / outcome.calls


def start_servers(
    db: str, schema: str, processes: int, workers: int = 1
) -> tuple[list[subprocess.Popen[str]], str, list[int]]:
    """``processes`` servers sharing one port (SO_REUSEPORT when more than one), each
    with ``workers`` workers: the processes started, the URL, and every server pid."""
    procs: list[subprocess.Popen[str]] = []
    pids: list[int] = []
    port = 0
    try:
        for _ in range(processes):
            proc, port, served_by = start_server(
                db, schema, port, reuse_port=processes > 1, workers=workers
            )
            procs.append(proc)
            pids.extend(served_by)
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    return procs, f"http://127.0.0.1:{port}", pids


def start_server(
    db: str, schema: str, port: int = 0, *, reuse_port: bool = False, workers: int = 1
) -> tuple[subprocess.Popen[str], int, list[int]]:
    """One ``rondevu serve`` (with ``workers`` workers): the process, its port, and the
    pids that serve (the workers, or the process itself)."""
    env = {
        **os.environ,
        "RONDEVU_DB": db,
        "RONDEVU_DB_SCHEMA": schema,
        "RONDEVU_PORT": str(port),
        "RONDEVU_REUSE_PORT": "1" if reuse_port else "0",
        "RONDEVU_WORKERS": str(workers),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "rondevu.cli", "serve"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    bound = None
    pids: list[int] = []
    started = 0
    for line in proc.stderr:
        entry = json.loads(line)
        if entry.get("msg") == "listening":
            bound = int(entry["port"])
            pids.append(int(entry["pid"]))
        if entry.get("msg") == "Application startup complete.":
            started += 1
            if started == workers:
                break
    if bound is None or started < workers:
        proc.kill()
        raise SystemExit("server did not start")
    # Keep draining stderr so the server never blocks on a full pipe.
    subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
    return proc, bound, pids


def seed_and_bodies(url: str, total: int) -> list[str]:
    """Create the data the mix needs and return ``total`` pre-signed bodies in mix order."""
    rng = random.Random(7)
    ts = now_ms()
    http = httpx.Client(base_url=url, timeout=60)

    def ok(body: Any) -> Any:
        reply = http.post("/rpc", json=body).json()
        assert reply["success"], reply
        return reply["result"]

    # Stable services for direct and discovery lookups (never answered).
    listed = [Peer(f"list-{i}") for i in range(20)]
    for peer in listed:
        fqn = f"benchd:1.0.0@{peer.username}"
        offers = [{"sdp": fake_sdp(400)} for _ in range(5)]
        ok(peer.call("publishService", {"serviceFqn": fqn, "offers": offers, "ttl": 3600000}, ts))
    # Offers that will be answered during the run, one answer body each.
    answers_needed = total * MIX.count("answer") // len(MIX) + 10
    fresh: list[str] = []
    sellers = [Peer(f"sell-{i}") for i in range(answers_needed // 100 + 1)]
    for peer in sellers:
        fqn = f"bencha:1.0.0@{peer.username}"
        offers = [{"sdp": fake_sdp(300)} for _ in range(100)]
        result = ok(
            peer.call("publishService", {"serviceFqn": fqn, "offers": offers, "ttl": 3600000}, ts)
        )
        fresh.extend(o["offerId"] for o in result["offers"])
    # Connections in progress: owners with answered offers exchanging candidates.
    owners = [Peer(f"own-{i}") for i in range(40)]
    answerers = [Peer(f"ans-{i}") for i in range(40)]
    pairs: list[tuple[Peer, Peer, str]] = []
    for owner, answerer in zip(owners, answerers, strict=True):
        fqn = f"benchc:1.0.0@{owner.username}"
        offers = [{"sdp": fake_sdp(300)} for _ in range(5)]
        result = ok(
            owner.call("publishService", {"serviceFqn": fqn, "offers": offers, "ttl": 3600000}, ts)
        )
        for offer in result["offers"]:
            oid = offer["offerId"]
            ok(answerer.call("answerOffer", {"offerId": oid, "sdp": fake_sdp(300)}, ts))
            pairs.append((owner, answerer, oid))
    publishers = [Peer(f"pub-{i}") for i in range(50)]
    http.close()

    since = now_ms()
    candidate = {
        "candidate": "candidate:2 1 udp 1686052607 203.0.113.7 61000 typ srflx",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    bodies: list[str] = []
    answer_index = 0
    while len(bodies) < total:
        block = MIX[:]
        rng.shuffle(block)
        for kind in block:
            if kind == "poll":
                peer = rng.choice(owners)
                body = peer.call("poll", {"since": POLL_SINCE}, ts)
            elif kind == "getIce":
                owner, answerer, oid = rng.choice(pairs)
                peer = rng.choice([owner, answerer])
                body = peer.call("getIceCandidates", {"offerId": oid, "since": since}, ts)
            elif kind == "addIce":
                owner, answerer, oid = rng.choice(pairs)
                peer = rng.choice([owner, answerer])
                body = peer.call(
                    "addIceCandidates", {"offerId": oid, "candidates": [candidate]}, ts
                )
            elif kind == "direct":
                target = rng.choice(listed)
                fqn = f"benchd:1.0.0@{target.username}"
                body = rng.choice(answerers).call("getService", {"serviceFqn": fqn}, ts)
            elif kind == "random":
                body = rng.choice(answerers).call("getService", {"serviceFqn": "benchd:1.0.0"}, ts)
            elif kind == "paged":
                params = {"serviceFqn": "benchd:1.0.0", "limit": 10, "offset": rng.randrange(10)}
                body = rng.choice(answerers).call("getService", params, ts)
            elif kind == "answer":
                oid = fresh[answer_index % len(fresh)]
                answer_index += 1
                answerer = rng.choice(answerers)
                body = answerer.call("answerOffer", {"offerId": oid, "sdp": fake_sdp(400)}, ts)
            else:
                peer = rng.choice(publishers)
                fqn = f"benchp:1.0.0@{peer.username}"
                params = {"serviceFqn": fqn, "offers": [{"sdp": fake_sdp()}], "ttl": 300000}
                body = peer.call("publishService", params, ts)
            bodies.append(json.dumps(body, separators=(",", ":")))
    return bodies[:total]


def bench_backend(
    label: str,
    db: str,
    seconds: int,
    connections: int,
    expect_rate: int,
    processes: int,
    workers: int = 1,
) -> None:
    schema = f"rdv_bench_{uuid.uuid4().hex[:8]}" if db.startswith("postgres") else ""
    procs, url, pids = start_servers(db, schema, processes, workers)
    try:
        total = expect_rate * seconds
        bodies = seed_and_bodies(url, total)
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
            handle.write("\n".join(bodies) + "\n")
        try:
            ceiling, ceiling_cpu = measured(
                pids, url + "/health", CEILING_SCRIPT, seconds, connections, {}
            )
            mix, mix_cpu = measured(
                pids, url, WRK_SCRIPT, seconds, connections, {"BENCH_BODIES": handle.name}
            )
        finally:
            os.unlink(handle.name)
        if mix.calls > total:
            print(f"  note: {mix.calls} calls > {total} bodies; answers repeated (failures)")
        success = mix.ok / max(1, mix.calls)

        def cpu(value: float | None) -> str:
            return "" if value is None else f"  server CPU {value:5.0f} µs/request"

        print(
            f"{label:10s} mix: {mix.rate:8.0f} calls/s  p50 {mix.p50_ms:6.2f} ms  "
            f"p99 {mix.p99_ms:6.2f} ms  success {success:6.1%}{cpu(mix_cpu)}\n"
            f"{'':10s} ceiling (GET /health): {ceiling.rate:8.0f} req/s  "
            f"p50 {ceiling.p50_ms:6.2f} ms  p99 {ceiling.p99_ms:6.2f} ms{cpu(ceiling_cpu)}\n"
            f"{'':10s} ratio to ceiling: {mix.rate / ceiling.rate:.2f}"
        )
        if ceiling_cpu is not None:
            check = signature_check_us()
            print(
                f"{'':10s} bound: a signature check costs {check:.0f} µs here, so a server "
                f"doing nothing but {ceiling_cpu:.0f} µs of HTTP and one check per call would "
                f"reach at most {ceiling_cpu / (ceiling_cpu + check):.2f} of the ceiling"
            )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        if schema:
            import asyncio

            import asyncpg  # type: ignore[import-untyped]

            async def drop() -> None:
                conn = await asyncpg.connect(db)
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                await conn.close()

            asyncio.run(drop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--max-rate", type=int, default=9000, help="bodies per second to sign")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT); above 1, SQLite is a file",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="rondevu serve --workers N for each process; above 1, SQLite is a file",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    if args.processes < 1 or args.workers < 1:
        raise SystemExit("--processes and --workers must be at least 1")
    servers = "one server process" if args.processes == 1 else f"{args.processes} processes"
    if args.workers > 1:
        servers += f" with {args.workers} workers"
    print(
        f"{args.connections} connections, {args.seconds} s per run, {servers}, "
        f"{os.cpu_count()} CPUs shared with wrk (server CPU per request: the servers' CPU "
        "time over the run, signature-check threads included)"
    )
    run = (args.seconds, args.connections, args.max_rate, args.processes, args.workers)
    if args.processes == 1 and args.workers == 1:
        bench_backend("sqlite", ":memory:", *run)
    else:  # :memory: is per process: several share one file (WAL)
        with tempfile.TemporaryDirectory() as directory:
            bench_backend("sqlite file", os.path.join(directory, "bench.db"), *run)
    dsn = os.environ.get("RONDEVU_TEST_POSTGRES_DSN")
    if dsn:
        bench_backend("postgresql", dsn, *run)
    else:
        print("postgresql: skipped (RONDEVU_TEST_POSTGRES_DSN not set)")


if __name__ == "__main__":
    main()
