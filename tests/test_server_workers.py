"""``rondevu serve --workers N``: N real server processes on one port, one database.

Started through the CLI on 127.0.0.1 (port 0), stopped with SIGTERM; synchronised by
their log lines.  Which worker accepts a connection is the kernel's choice
(SO_REUSEPORT), so the checks that need both workers look at the connections each
worker process holds (Linux /proc).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rondevu.cli_options import EXIT_INTERRUPTED
from rondevu_server.cli import EXIT_NO_DATABASE
from tests.cli_testing import Lines, Processes, closed_url, run_cli, start_serve, stderr_lines
from tests.rondevu_server_testing import Peer, call, drop_schema, now_ms, postgres_dsn, sdp, unique

BACK = 10.0
DATABASES = ["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment naming a database several processes share."""
    if request.param == "sqlite-file":
        yield {"RONDEVU_DB": str(tmp_path / "shared.db")}
        return
    schema = f"rdv_test_{uuid.uuid4().hex[:12]}"
    try:
        yield {"RONDEVU_DB": postgres_dsn(), "RONDEVU_DB_SCHEMA": schema}
    finally:
        drop_schema(schema)


def worker_pids(lines: Lines) -> list[int]:
    """The pids of the workers whose start the supervisor's log has shown so far."""
    pids = []
    for line in lines.seen:
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("msg") == "listening":
            pids.append(int(entry["pid"]))
    return pids


def established(pid: int, port: int) -> int:
    """TCP connections to ``port`` that process ``pid`` holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open(f"/proc/{pid}/net/tcp") as table:
        for row in list(table)[1:]:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
def test_two_workers_share_the_port_and_the_held_calls(database: dict[str, str]) -> None:
    with Processes() as started:
        url, lines = start_serve(started, "--workers", "2", env=database, ready=2)
        supervisor = started[0]
        pids = worker_pids(lines)
        assert len(set(pids)) == 2
        assert supervisor.pid not in pids
        port = int(url.rsplit(":", 1)[1])
        info = httpx.get(url + "/").json()
        assert info["extensions"]["longPoll"] == {"maxWaitMs": 25_000}

        # many connections: the kernel gives both workers some (2**-40 odds otherwise)
        clients = [httpx.Client(base_url=url, timeout=60) for _ in range(40)]
        try:
            for client in clients:
                assert client.get("/health").status_code == 200
            assert all(established(pid, port) > 0 for pid in pids), pids

            # polls held on some connections, answered through others
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                for index in range(4):
                    alice, bob = Peer("a"), Peer("b")
                    fqn = f"{unique('svc')}:1.0.0@{alice.username}"
                    params = {"serviceFqn": fqn, "offers": [{"sdp": sdp()}]}
                    published = call(clients[index], alice, "publishService", params)
                    offer = published["offers"][0]["offerId"]
                    body = alice.call("poll", {"since": 0, "waitMs": 20_000}, now=now_ms())
                    held = pool.submit(clients[index].post, "/rpc", json=body)
                    answer = {"offerId": offer, "sdp": "answer"}
                    call(clients[-1 - index], bob, "answerOffer", answer)
                    answers = held.result(BACK).json()["result"]["answers"]
                    assert [a["offerId"] for a in answers] == [offer]
        finally:
            for client in clients:
                client.close()

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
        rest = lines.rest()
        exited = [json.loads(line)["pid"] for line in rest if '"msg": "exited"' in line]
        assert sorted(exited) == sorted([*pids, supervisor.pid])


def test_stopping_the_workers_answers_held_calls(tmp_path: Path) -> None:
    env = {"RONDEVU_DB": str(tmp_path / "shared.db")}
    with Processes() as started, concurrent.futures.ThreadPoolExecutor(2) as pool:
        url, _ = start_serve(started, "--workers", "2", env=env, ready=2)
        alice = Peer("a")
        with httpx.Client(base_url=url, timeout=60) as client:
            call(client, alice, "poll", {})  # claims the name first
            marker = Peer("m")
            batch = [
                alice.call("poll", {"waitMs": 25_000}, now=now_ms()),
                marker.call("poll", {}, now=now_ms()),
            ]
            held = pool.submit(client.post, "/rpc", json=batch)
            with httpx.Client(base_url=url, timeout=60) as other:
                deadline = time.monotonic() + BACK
                while call(other, Peer("w"), "getUser", {"username": marker.username})["available"]:
                    assert time.monotonic() < deadline
            started[0].send_signal(signal.SIGTERM)
            reply = held.result(BACK)
        assert reply.status_code == 200
        assert reply.json()[0] == {"success": True, "result": {"answers": [], "iceCandidates": {}}}
        assert started[0].wait(30) == 0


@pytest.mark.parametrize("db", [":memory:", "sqlite://", "file::memory:?cache=shared"])
def test_workers_on_a_private_database_are_refused(db: str) -> None:
    result = run_cli("serve", "--port", "0", "--workers", "2", "--db", db)
    assert result.returncode == 2
    assert result.stderr == (
        "rondevu serve: --workers 2 needs a database the processes share "
        f"(a SQLite file or postgresql://...), and {db} is private to each\n"
    )


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_workers_must_be_a_number_of_at_least_one(value: str) -> None:
    result = run_cli("serve", "--port", "0", "--workers", value)
    assert result.returncode == 2
    [line] = stderr_lines(result.stderr)
    assert f"argument --workers: '{value}' is not a number of processes (1 or more)" in line


def test_workers_from_the_environment_are_checked_too() -> None:
    result = run_cli("serve", "--port", "0", env={"RONDEVU_WORKERS": "3"})
    assert result.returncode == 2
    assert result.stderr.startswith("rondevu serve: --workers 3 needs a database")
    result = run_cli("serve", "--port", "0", env={"RONDEVU_WORKERS": "0"})
    assert result.returncode == 2
    assert result.stderr.startswith("rondevu serve: RONDEVU_WORKERS: '0' is not a number")


def test_a_worker_that_cannot_start_stops_the_rest() -> None:
    """A database nobody listens on: the workers cannot start, and the supervisor says
    why in one line, with the exit code of one server (3)."""
    dsn = f"postgresql://nobody@127.0.0.1:{closed_url().rsplit(':', 1)[1]}/x"
    result = run_cli("serve", "--port", "0", "--workers", "2", "--db", dsn)
    assert result.returncode == EXIT_NO_DATABASE
    assert [line for line in stderr_lines(result.stderr) if not line.startswith("{")] == [
        f"rondevu serve: cannot open the PostgreSQL database {dsn}: Connection refused"
    ]


def test_the_listening_line_comes_once_all_workers_answer(tmp_path: Path) -> None:
    env = {"RONDEVU_DB": str(tmp_path / "shared.db")}
    with Processes() as started:
        url, lines = start_serve(started, "--workers", "2", env=env, ready=2)
        line = lines.wait_for(r"^rondevu serve: ")
        assert line == f"rondevu serve: listening on {url}"
        started[0].send_signal(signal.SIGINT)
        assert started[0].wait(30) == EXIT_INTERRUPTED
        rest = lines.rest()
        assert not [line for line in rest if line.startswith("rondevu serve: ")]
