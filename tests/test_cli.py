"""The ``rondevu`` command line, run as real subprocesses (the console script's module):
the demo, and ``publish`` / ``connect`` against a real ``rondevu serve`` on 127.0.0.1.

Option checking is in test_cli_options.py, signals in test_cli_signals.py, identity
files in test_cli_identity.py.  Every subprocess is bounded by a deadline and stopped in
teardown; synchronisation is by reading its output lines, never by sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cli_testing
from tests.cli_testing import (
    DEADLINE_S,
    ROOT,
    Lines,
    Processes,
    cli_env,
    closed_url,
    no_traceback,
    run_cli,
    start_cli,
    start_server,
    stderr_lines,
)

processes = cli_testing.processes
_run_cli = run_cli
_env = cli_env


def test_demo_runs_the_whole_timeline() -> None:
    result = _run_cli("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    order = [
        r"server +signaling server up at http://127\.0\.0\.1:\d+",
        r"alice +published chat:1\.0\.0@alice",
        r"bob +connected \(ICE up, data channel open\)",
        r"alice +received 'hello alice'",
        r"alice +received 4 bytes 00 01 02 ff",
        r"bob +received 'hi bob'",
        r"bob +received 2 bytes ca fe",
        r"bob +disconnected",
        r"bob +reconnect:scheduled attempt 1",
        r"bob +message:buffered 'sent while down #1'",
        r"bob +reconnected after",
        r"bob +message:replayed 'sent while down #1'",
        r"alice +received 'sent while down #1' \(replayed\)",
        r"alice +received 'sent while down #2' \(replayed\)",
        r"server +stopped",
        r"rondevu demo: OK in \d+ ms",
    ]
    position = 0
    for pattern in order:
        match = re.compile(pattern).search(out, position)
        assert match is not None, f"{pattern!r} missing (in order) from:\n{out}"
        position = match.end()
    # Every timeline line carries its time since start.
    assert re.search(r"^\s+\d+ ms  bob ", out, re.MULTILINE)
    # Nothing scary on the happy path.
    assert result.stderr == ""
    assert no_traceback(out)


def test_demo_quiet_prints_only_the_result() -> None:
    result = _run_cli("demo", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"rondevu demo: OK in \d+ ms\n", result.stdout)


def test_demo_timeout_fails_with_one_line_naming_the_step() -> None:
    result = _run_cli("demo", "--timeout", "0.001")
    assert result.returncode == 1
    [line] = stderr_lines(result.stderr)
    assert re.fullmatch(r"rondevu demo: FAILED: timed out after 0\.001 s while \w.*", line)
    assert no_traceback(result.stdout, result.stderr)


# -- serve ---------------------------------------------------------------------------------


def test_serve_on_a_taken_port_fails_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_cli("serve", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.endswith(
        f"rondevu serve: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )
    assert "Traceback" not in result.stderr


def test_serve_with_a_bad_setting_fails_on_stderr() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rondevu.cli", "serve"],
        capture_output=True,
        text=True,
        env={**_env(), "RONDEVU_PORT": "abc"},
        cwd=ROOT,
        timeout=DEADLINE_S,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "rondevu serve: RONDEVU_PORT: cannot parse 'abc' as int\n"


# -- publish and connect: failures before any peer ------------------------------------------


def test_connect_to_an_unreachable_server_fails_with_one_line() -> None:
    url = closed_url()
    result = _run_cli("connect", "chat:1.0.0@alice", "--api-url", url)
    assert result.returncode == 1
    [line] = stderr_lines(result.stderr)
    assert line.startswith(f"rondevu connect: cannot reach the signaling server at {url}")
    assert no_traceback(result.stderr)


def test_the_server_url_comes_from_the_environment() -> None:
    url = closed_url()
    result = _run_cli("publish", "chat:1.0.0", env={"RONDEVU_API_URL": url})
    assert result.returncode == 1
    [line] = stderr_lines(result.stderr)
    assert line.startswith(f"rondevu publish: cannot reach the signaling server at {url}")


def test_a_bad_server_url_in_the_environment_is_bad_input() -> None:
    result = _run_cli("connect", "chat:1.0.0", env={"RONDEVU_API_URL": "ftp://x"})
    assert result.returncode == 2
    assert stderr_lines(result.stderr) == [
        "rondevu connect: RONDEVU_API_URL: 'ftp://x' is not an http:// or https:// URL with a host"
    ]


def test_a_name_held_by_another_key_fails_at_once(processes: Processes, tmp_path: Path) -> None:
    url = start_server(processes)
    name = f"dora-{os.getpid()}"
    first = start_cli("publish", "chat:1.0.0", "--username", name, "--api-url", url)
    processes.append(first)
    Lines(first.stderr).wait_for(r"published chat:1\.0\.0@")
    # Another process, another key, the same name: refused before any WebRTC.
    result = _run_cli("connect", "chat:1.0.0@someone", "--username", name, "--api-url", url)
    assert result.returncode == 1
    [line] = stderr_lines(result.stderr)
    assert line.startswith(f"rondevu connect: username '{name}' is taken by another key")


# -- publish and connect: talking --------------------------------------------------------------


def test_publish_and_connect_exchange_a_line(processes: Processes, tmp_path: Path) -> None:
    server_url = start_server(processes)
    key = tmp_path / "alice.json"
    username = f"alice-{os.getpid()}"
    common = ["--api-url", server_url, "--host-address", "127.0.0.1"]
    publisher = start_cli(
        "publish", "chat:1.0.0", "--username", username, "--key-file", str(key), *common
    )
    processes.append(publisher)
    publisher_status = Lines(publisher.stderr)
    publisher_status.wait_for(rf"published chat:1\.0\.0@{username} \(echo\)")
    # The key file was created private, with the pair and the username.
    assert key.stat().st_mode & 0o777 == 0o600
    stored = json.loads(key.read_text())
    assert set(stored) == {"publicKey", "privateKey", "username"}
    assert stored["username"] == username

    peer = start_cli("connect", f"chat:1.0.0@{username}", *common, stdin=subprocess.PIPE)
    processes.append(peer)
    peer_status = Lines(peer.stderr)
    peer_status.wait_for(r"connected to chat:1\.0\.0@")
    assert peer.stdin is not None
    peer.stdin.write(b"hello over webrtc\n")
    peer.stdin.flush()
    # Both stdouts are pipes: raw messages, no sender mark.
    assert Lines(peer.stdout).wait_for("hello") == "hello over webrtc"  # the echo came back
    assert Lines(publisher.stdout).wait_for("hello") == "hello over webrtc"

    # EOF on stdin: connect closes everything and exits 0.
    peer.stdin.close()
    assert peer.wait(DEADLINE_S) == 0
    # SIGTERM: publish closes everything and exits 0.
    publisher.send_signal(signal.SIGTERM)
    assert publisher.wait(DEADLINE_S) == 0
    # Both said goodbye, without a traceback.
    assert any("SIGTERM: closing" in line for line in publisher_status.rest())
    peer_status.rest()
    assert no_traceback(publisher_status.seen, peer_status.seen)


def test_interactive_publish_chats_both_ways(processes: Processes) -> None:
    server_url = start_server(processes)
    username = f"carol-{os.getpid()}"
    common = ["--api-url", server_url, "--host-address", "127.0.0.1"]
    publisher = start_cli(
        "publish",
        "talk:1.0.0",
        "--interactive",
        "--show-sender",
        "always",
        "--username",
        username,
        *common,
        stdin=subprocess.PIPE,
    )
    processes.append(publisher)
    publisher_status = Lines(publisher.stderr)
    publisher_status.wait_for(r"published talk:1\.0\.0@.*\(interactive\)")
    peer = start_cli("connect", f"talk:1.0.0@{username}", *common, stdin=subprocess.PIPE)
    processes.append(peer)
    Lines(peer.stderr).wait_for(r"connected to talk:1\.0\.0@")
    joined = publisher_status.wait_for(r"connected \(offer ")
    peer_name = joined.removeprefix("rondevu: ").split()[0]
    assert peer.stdin is not None
    assert publisher.stdin is not None

    peer.stdin.write(b"hi carol\n")
    peer.stdin.flush()
    # --show-sender always: marked although stdout is a pipe.
    assert Lines(publisher.stdout).wait_for("hi carol") == f"{peer_name}: hi carol"
    publisher.stdin.write(b"hi there\n")
    publisher.stdin.flush()
    assert Lines(peer.stdout).wait_for("hi there") == "hi there"

    # EOF on the publisher's stdin ends it cleanly; then the peer's.
    publisher.stdin.close()
    assert publisher.wait(DEADLINE_S) == 0
    peer.stdin.close()
    assert peer.wait(DEADLINE_S) == 0


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal: (our end, the end a subprocess gets as stdout)."""
    ours, theirs = pty.openpty()
    try:
        yield ours, theirs
    finally:
        for fd in (ours, theirs):
            with contextlib.suppress(OSError):  # already closed by the test
                os.close(fd)


def test_connect_marks_received_lines_on_a_terminal(
    processes: Processes, terminal: tuple[int, int]
) -> None:
    server_url = start_server(processes)
    username = f"erin-{os.getpid()}"
    common = ["--api-url", server_url, "--host-address", "127.0.0.1"]
    publisher = start_cli("publish", "chat:1.0.0", "--username", username, *common)
    processes.append(publisher)
    Lines(publisher.stderr).wait_for(r"published chat:1\.0\.0@")
    ours, theirs = terminal
    peer = start_cli(
        "connect", f"chat:1.0.0@{username}", *common, stdin=subprocess.PIPE, stdout=theirs
    )
    processes.append(peer)
    os.close(theirs)  # the subprocess holds its own copy
    Lines(peer.stderr).wait_for(r"connected to chat:1\.0\.0@")
    assert peer.stdin is not None
    peer.stdin.write(b"ping\n")
    peer.stdin.flush()
    # stdout is a terminal: the echo is marked with the publisher's name.
    assert Lines(ours).wait_for("ping") == f"{username}: ping"
    peer.stdin.close()
    assert peer.wait(DEADLINE_S) == 0


def test_connect_exits_with_one_line_once_the_connection_gives_up(
    processes: Processes,
) -> None:
    # Issue #11: after giving up, connect used to wait for stdin, and the next typed
    # line printed a long traceback.  Here stdin stays open: connect must end by itself.
    server_url = start_server(processes)
    server = processes[-1]
    username = f"fred-{os.getpid()}"
    common = ["--api-url", server_url, "--host-address", "127.0.0.1"]
    publisher = start_cli("publish", "chat:1.0.0", "--username", username, *common)
    processes.append(publisher)
    Lines(publisher.stderr).wait_for(r"published chat:1\.0\.0@")
    peer = start_cli(
        "connect",
        f"chat:1.0.0@{username}",
        "--reconnect-attempts",
        "1",
        *common,
        stdin=subprocess.PIPE,
    )
    processes.append(peer)
    peer_status = Lines(peer.stderr)
    peer_status.wait_for(r"connected to chat:1\.0\.0@")
    # The server goes first, so the reconnection attempt fails fast (refused), then
    # the publisher leaves, which drops the link.
    server.send_signal(signal.SIGTERM)
    assert server.wait(DEADLINE_S) == 0
    publisher.send_signal(signal.SIGTERM)
    assert publisher.wait(DEADLINE_S) == 0
    assert peer.wait(DEADLINE_S) == 1
    lines = peer_status.rest()
    assert lines[-1].startswith(f"rondevu connect: lost chat:1.0.0@{username} for good: ")
    assert any("reconnecting in" in line for line in lines)
    assert no_traceback(peer_status.seen)


def test_a_key_file_keeps_an_anonymous_name_across_restarts(
    processes: Processes, tmp_path: Path
) -> None:
    # The server binds a key to the first name it claims: a restart with the same key
    # file but a fresh anon name was refused ("already claimed a different username").
    server_url = start_server(processes)
    key = tmp_path / "anon.json"
    common = ["--api-url", server_url, "--host-address", "127.0.0.1", "--key-file", str(key)]
    names = []
    for _ in range(2):
        publisher = start_cli("publish", "chat:1.0.0", *common)
        processes.append(publisher)
        line = Lines(publisher.stderr).wait_for(r"published chat:1\.0\.0@anon-\S+ \(echo\)")
        names.append(line.split("@")[1].split()[0])
        publisher.send_signal(signal.SIGTERM)
        assert publisher.wait(DEADLINE_S) == 0
    assert names[0] == names[1] == json.loads(key.read_text())["username"]
