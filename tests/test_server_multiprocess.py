"""Two `rondevu serve` processes on one PostgreSQL database serve one deployment.

Real processes started through the CLI on 127.0.0.1 (port 0, the chosen port read from
the JSON log line), a fresh schema, real clocks.  An offer published through one
process is found, answered and ICE-exchanged through the other; an answer race across
the two has exactly one winner.  Both processes are stopped with SIGTERM in teardown
and must exit 0.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import IO, Any

import httpx
import pytest

from tests.rondevu_server_testing import Peer, drop_schema, postgres_dsn, sdp, unique

pytestmark = pytest.mark.postgres


def _wait_for_port(stream: IO[str], deadline: float) -> int:
    """Read JSON log lines until startup completes; return the listening port."""
    port = None
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "listening":
            port = int(entry["port"])
        if entry.get("msg") == "Application startup complete." and port is not None:
            return port
    raise AssertionError("server process did not start")


@pytest.fixture
def two_servers() -> Iterator[list[httpx.Client]]:
    dsn = postgres_dsn()
    schema = f"rdv_test_{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "RONDEVU_DB": dsn, "RONDEVU_DB_SCHEMA": schema, "RONDEVU_PORT": "0"}
    procs: list[subprocess.Popen[str]] = []
    clients: list[httpx.Client] = []
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "rondevu.cli", "serve", "--host", "127.0.0.1"],
                    env=env,
                    stderr=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    text=True,
                )
            )
        deadline = time.monotonic() + 30
        for proc in procs:
            assert proc.stderr is not None
            port = _wait_for_port(proc.stderr, deadline)
            clients.append(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30))
        yield clients
    finally:
        for client in clients:
            client.close()
        for proc in procs:
            proc.terminate()
        codes, logs = [], []
        for proc in procs:
            try:
                codes.append(proc.wait(30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait(30))
            if proc.stderr is not None:
                logs.append(proc.stderr.read()[-3000:])
                proc.stderr.close()
        drop_schema(schema)
        assert codes == [0] * len(procs), logs


def _call(client: httpx.Client, peer: Peer, method: str, params: dict[str, Any]) -> Any:
    now = time.time_ns() // 1_000_000
    reply = client.post("/rpc", json=peer.call(method, params, now=now)).json()
    return reply


def _ok(client: httpx.Client, peer: Peer, method: str, params: dict[str, Any]) -> Any:
    reply = _call(client, peer, method, params)
    assert reply["success"], reply
    return reply["result"]


def test_offer_published_on_one_is_answered_on_the_other(
    two_servers: list[httpx.Client],
) -> None:
    one, two = two_servers
    alice, bob, carol = Peer("a"), Peer("b"), Peer("c")
    name = unique("svc")
    fqn = f"{name}:1.0.0@{alice.username}"
    params = {"serviceFqn": fqn, "offers": [{"sdp": sdp()}, {"sdp": sdp()}], "ttl": 300_000}
    published = _ok(one, alice, "publishService", params)
    found = _ok(two, bob, "getService", {"serviceFqn": f"{name}:1.0.0"})
    offer = found["offerId"]
    assert offer == published["offers"][0]["offerId"]
    _ok(two, bob, "answerOffer", {"serviceFqn": fqn, "offerId": offer, "sdp": "answer"})
    answers = _ok(one, alice, "poll", {"since": 0})["answers"]
    assert [(a["offerId"], a["answererId"]) for a in answers] == [(offer, bob.username)]
    _ok(one, alice, "addIceCandidates", {"offerId": offer, "candidates": [{"candidate": "a1"}]})
    _ok(two, bob, "addIceCandidates", {"offerId": offer, "candidates": [{"candidate": "b1"}]})
    got = _ok(two, bob, "getIceCandidates", {"offerId": offer, "since": 0})["candidates"]
    assert [c["candidate"] for c in got] == [{"candidate": "a1"}]
    got = _ok(one, alice, "getIceCandidates", {"offerId": offer, "since": 0})["candidates"]
    assert [c["candidate"] for c in got] == [{"candidate": "b1"}]

    # an answer race across the two processes has exactly one winner (S3)
    second = published["offers"][1]["offerId"]
    racers = [(one, carol), (two, Peer("d"))]
    for client, peer in racers:
        _ok(client, peer, "poll", {})
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        replies = list(
            pool.map(
                lambda pair: _call(
                    pair[0], pair[1], "answerOffer", {"offerId": second, "sdp": "x"}
                ),
                racers,
            )
        )
    assert sorted(r["success"] for r in replies) == [False, True]
    assert [r["error"] for r in replies if not r["success"]] == ["Offer already answered"]
