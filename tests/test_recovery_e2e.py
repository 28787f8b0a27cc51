"""Recovery end to end (issue #11), with real processes on 127.0.0.1: ``rondevu serve``,
``rondevu publish`` and ``rondevu connect`` are restarted, killed and replaced, and each
test waits (bounded) for the output line that shows the recovery.  No sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from rondevu import Rondevu, RpcError
from tests.cli_testing import (
    DEADLINE_S,
    Lines,
    Processes,
    closed_url,
    no_traceback,
    processes,
    start_cli,
    start_serve,
    stderr_lines,
)
from tests.rondevu_server_testing import drop_schema, postgres_dsn

__all__ = ["processes"]  # the fixture, imported for pytest

LOOPBACK = ("--host-address", "127.0.0.1")


def _serve(processes: Processes, port: str, *db: str) -> tuple[subprocess.Popen[bytes], Lines]:
    _url, lines = start_serve(processes, "--port", port, *db)
    return processes[-1], lines


def _publisher(
    processes: Processes, url: str, key: Path, *extra: str
) -> tuple[subprocess.Popen[bytes], Lines]:
    publisher = start_cli(
        "publish", "chat:1.0.0", "--key-file", str(key), "--api-url", url, *LOOPBACK, *extra
    )
    processes.append(publisher)
    lines = Lines(publisher.stderr)
    lines.wait_for(r"published chat:1\.0\.0@")
    return publisher, lines


def _peer(processes: Processes, url: str, fqn: str) -> tuple[subprocess.Popen[bytes], Lines]:
    peer = start_cli("connect", fqn, "--api-url", url, *LOOPBACK, stdin=subprocess.PIPE)
    processes.append(peer)
    return peer, Lines(peer.stderr)


def _echo(peer: subprocess.Popen[bytes], text: str) -> None:
    """A line sent by ``peer`` comes back from the echoing publisher."""
    assert peer.stdin is not None
    peer.stdin.write(f"{text}\n".encode())
    peer.stdin.flush()
    assert Lines(peer.stdout).wait_for(text) == text


def _lookup(url: str, fqn: str) -> str:
    """What a new client's direct getService of ``fqn`` says: an offer id, or the error."""

    async def look() -> str:
        async with Rondevu.connect(url) as client:
            try:
                entry = await client.find_service(fqn)
            except RpcError as error:
                return error.message
            return str(getattr(entry, "offer_id", "?"))

    return anyio.run(look)


def _username(key: Path) -> str:
    import json

    name: str = json.loads(key.read_text())["username"]
    return name


# -- the server restarts ------------------------------------------------------------------


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards (skips without the test DSN)."""
    postgres_dsn()
    name = f"rdv_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        drop_schema(name)


@pytest.mark.parametrize("storage", ["memory", "sqlite-file", "postgresql"])
def test_a_running_publisher_is_reachable_again_after_the_server_restarts(
    processes: Processes, tmp_path: Path, storage: str, request: pytest.FixtureRequest
) -> None:
    if storage == "postgresql":
        db: tuple[str, ...] = (
            "--db",
            postgres_dsn(),
            "--db-schema",
            request.getfixturevalue("schema"),
        )
    elif storage == "sqlite-file":
        db = ("--db", str(tmp_path / "rondevu.db"))
    else:
        db = ("--db", ":memory:")
    port = closed_url().rsplit(":", 1)[1]
    url = f"http://127.0.0.1:{port}"
    server, _ = _serve(processes, port, *db)
    key = tmp_path / "alice.json"
    _publisher_process, published = _publisher(processes, url, key)
    fqn = f"chat:1.0.0@{_username(key)}"

    server.send_signal(signal.SIGTERM)
    assert server.wait(DEADLINE_S) == 0
    published.wait_for(r"signaling server unreachable \(")  # reported, not silent
    _serve(processes, port, *db)
    if storage == "memory":
        # The server forgot everything; the publisher notices within a poll interval.
        published.wait_for(r"republished chat:1\.0\.0@.*: service gone from the server")
    peer, status = _peer(processes, url, fqn)
    status.wait_for(r"connected to chat:1\.0\.0@")
    _echo(peer, "after the restart")
    assert no_traceback(published.seen, status.seen)


# -- the publisher leaves ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)], ids=["sigterm", "ctrl-c"]
)
def test_a_publisher_stopped_gracefully_withdraws_its_offers(
    processes: Processes, tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    url, _ = start_serve(processes)
    key = tmp_path / "alice.json"
    publisher, status = _publisher(processes, url, key)
    fqn = f"chat:1.0.0@{_username(key)}"
    assert len(_lookup(url, fqn)) == 64  # an offer id: the service is up
    publisher.send_signal(stop)
    assert publisher.wait(DEADLINE_S) == code
    # Gone at once: no peer can answer a dead offer of it any more.
    assert _lookup(url, fqn) == "Service not found"
    assert no_traceback(status.rest())


def test_a_publisher_killed_and_restarted_with_its_identity_is_reached_again(
    processes: Processes, tmp_path: Path
) -> None:
    url, _ = start_serve(processes)
    key = tmp_path / "alice.json"
    publisher, _ = _publisher(processes, url, key)
    fqn = f"chat:1.0.0@{_username(key)}"
    peer, status = _peer(processes, url, fqn)
    status.wait_for(r"connected to chat:1\.0\.0@")
    _echo(peer, "before the kill")
    publisher.kill()
    publisher.wait(DEADLINE_S)
    _publisher(processes, url, key)  # the same key file: the same name
    status.wait_for(r"reconnected", timeout=120)
    _echo(peer, "after the restart")
    assert no_traceback(status.seen)


def test_an_attempt_on_a_dead_offer_fails_at_the_handshake_bound_then_finds_the_new_one(
    processes: Processes, tmp_path: Path
) -> None:
    """A killed publisher's offers stay on the server; a new peer answers one, and its
    attempt ends at the handshake bound (``handshake_timeout_ms``, not the 30 s
    connection timeout) with a line that says so; it keeps trying, and reaches the
    publisher that comes back with the same identity."""
    url, _ = start_serve(processes)
    key = tmp_path / "alice.json"
    publisher, _ = _publisher(processes, url, key)
    publisher.kill()
    publisher.wait(DEADLINE_S)
    fqn = f"chat:1.0.0@{_username(key)}"
    assert re.fullmatch(r"[0-9a-f]+", _lookup(url, fqn))  # the dead offer is still handed out
    peer, status = _peer(processes, url, fqn)
    status.wait_for(r"attempt failed: No ICE connection within \d+ ms of the answer", timeout=60)
    status.wait_for(r"reconnecting in \d+ ms")
    _publisher(processes, url, key)
    status.wait_for(r"(connected to|reconnected)", timeout=120)
    _echo(peer, "found the new one")
    assert no_traceback(status.seen)


def test_a_second_process_with_the_same_identity_that_exits_leaves_the_first_reachable(
    processes: Processes, tmp_path: Path
) -> None:
    url, _ = start_serve(processes)
    key = tmp_path / "alice.json"
    _first, first_status = _publisher(processes, url, key)
    second, _ = _publisher(processes, url, key)  # replaces the first one's offers
    second.send_signal(signal.SIGTERM)  # and withdraws the service on its way out
    assert second.wait(DEADLINE_S) == 0
    # Its publish and withdrawal end the first one's held poll, which then looks at once.
    first_status.wait_for(r"republished chat:1\.0\.0@", timeout=120)
    peer, status = _peer(processes, url, f"chat:1.0.0@{_username(key)}")
    status.wait_for(r"connected to chat:1\.0\.0@")
    _echo(peer, "still here")
    assert no_traceback(first_status.seen, status.seen)


# -- permanent and temporary refusals -----------------------------------------------------------


def test_publishing_under_a_name_held_by_another_key_fails_at_once(
    processes: Processes, tmp_path: Path
) -> None:
    url, _ = start_serve(processes)
    key = tmp_path / "alice.json"
    _publisher(processes, url, key)
    name = _username(key)
    other = start_cli("publish", "chat:1.0.0", "--username", name, "--api-url", url)
    processes.append(other)
    assert other.wait(DEADLINE_S) == 1
    [line] = stderr_lines(Lines(other.stderr).rest()[-1])
    assert line.startswith(f"rondevu publish: username '{name}' is taken by another key")


def test_a_service_that_appears_later_is_connected_to_without_a_restart(
    processes: Processes, tmp_path: Path
) -> None:
    url, _ = start_serve(processes)
    key = tmp_path / "late.json"
    created = start_cli("keygen", "--username", f"late-{os.getpid()}", str(key))
    processes.append(created)
    assert created.wait(DEADLINE_S) == 0
    peer, status = _peer(processes, url, f"chat:1.0.0@late-{os.getpid()}")
    status.wait_for(r"attempt failed: getService failed: Service not found")
    status.wait_for(r"reconnecting in \d+ ms \(attempt 1\)")  # each wait is reported
    _publisher(processes, url, key)
    status.wait_for(r"connected to chat:1\.0\.0@")
    _echo(peer, "you came")
    assert no_traceback(status.seen)


def test_a_publisher_whose_server_hangs_still_exits_promptly_on_sigterm(
    processes: Processes, tmp_path: Path
) -> None:
    url, _ = start_serve(processes)
    server = processes[-1]
    publisher, status = _publisher(processes, url, tmp_path / "alice.json")
    server.send_signal(signal.SIGSTOP)  # accepts nothing more, answers nothing
    try:
        publisher.send_signal(signal.SIGTERM)
        # The withdrawal is bounded: the exit does not wait on the server.
        assert publisher.wait(DEADLINE_S) == 0
    finally:
        server.send_signal(signal.SIGCONT)
    assert no_traceback(status.rest())


def test_a_service_that_never_appears_ends_connect_with_one_line_naming_the_cause(
    processes: Processes,
) -> None:
    url, _ = start_serve(processes)
    peer = start_cli(
        "connect",
        "nosuch:1.0.0@nobody",
        "--connect-timeout",
        "3",
        "--api-url",
        url,
        stdin=subprocess.PIPE,  # left open: connect must end by itself
    )
    processes.append(peer)
    assert peer.wait(DEADLINE_S) == 1
    lines = Lines(peer.stderr).rest()
    assert any(re.search(r"reconnecting in \d+ ms \(attempt 1\)", line) for line in lines)
    assert lines[-1] == (
        "rondevu connect: no connection to nosuch:1.0.0@nobody within 3 s "
        "(last attempt: getService failed: Service not found)"
    )
    assert no_traceback(lines)
