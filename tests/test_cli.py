"""The ``rondevu`` command line, run as real subprocesses (the console script's module).

Every subprocess is bounded by a deadline and killed in teardown; synchronisation is by
reading its output lines until the expected one appears, never by sleeping.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 60.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "schemas"), str(ROOT / "drivers")]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def rondevu(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Start ``rondevu ARGS`` (``python -m rondevu.cli``) with unbuffered byte pipes."""
    return subprocess.Popen(
        [sys.executable, "-m", "rondevu.cli", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=_env(),
        cwd=ROOT,
    )


class Lines:
    """Reads one pipe of a subprocess line by line with a deadline (no sleeping).

    Reads the raw file descriptor (no Python buffering between ``select`` and the
    read), so a line is seen as soon as the process writes it.
    """

    def __init__(self, pipe: IO[bytes] | None) -> None:
        assert pipe is not None
        self.fd = pipe.fileno()
        self.seen: list[str] = []
        self._pending = b""
        self._eof = False

    def _next_line(self, deadline: float) -> str | None:
        while b"\n" not in self._pending:
            if self._eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self._eof = True
                if self._pending:
                    self._pending += b"\n"
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        text = line.decode("utf-8", "replace")
        self.seen.append(text)
        return text

    def wait_for(self, pattern: str, timeout: float = DEADLINE_S) -> str:
        """The first new line matching ``pattern``; fails at the deadline or at EOF."""
        deadline = time.monotonic() + timeout
        while (line := self._next_line(deadline)) is not None:
            if re.search(pattern, line):
                return line
        reason = "EOF" if self._eof else "deadline"
        pytest.fail(f"{reason} before a line matching {pattern!r}; saw {self.seen!r}")

    def rest(self, timeout: float = DEADLINE_S) -> list[str]:
        """Every remaining line until EOF."""
        deadline = time.monotonic() + timeout
        lines = []
        while (line := self._next_line(deadline)) is not None:
            lines.append(line)
        assert self._eof, f"no EOF in time; saw {self.seen!r}"
        return lines


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Subprocesses to kill (if still running) when the test ends."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait(DEADLINE_S)
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rondevu.cli", *args],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=DEADLINE_S,
        check=False,
    )


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
    assert "Traceback" not in out


def test_demo_quiet_prints_only_the_result() -> None:
    result = _run_cli("demo", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"rondevu demo: OK in \d+ ms\n", result.stdout)


def test_demo_timeout_fails_with_the_step_named() -> None:
    result = _run_cli("demo", "--timeout", "0.001")
    assert result.returncode == 1
    assert re.search(r"rondevu demo: FAILED: timed out after 0\.001 s while \w", result.stdout)
    assert "Traceback" not in result.stdout + result.stderr


# -- publish and connect -----------------------------------------------------------------


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


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


def test_connect_rejects_an_invalid_fqn() -> None:
    result = _run_cli("connect", "not a service", "--api-url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert result.stderr == (
        "rondevu connect: invalid FQN 'not a service': "
        "Service FQN must be in format: service:version[@username]\n"
    )
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["publish", "chat"], "rondevu publish: invalid SERVICE 'chat'"),
        (["publish", "chat:1.0.0@bob"], "SERVICE is name:version"),
        (["connect", "chat:1.0.0", "--username", "Bad Name!"], "invalid option"),
        (["connect", "chat:1.0.0", "--ice-servers", "nope"], "unknown ICE preset 'nope'"),
        (["connect", "chat:1.0.0", "--host-address", "localhost"], "invalid option"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str) -> None:
    result = _run_cli(*args, "--api-url", "http://127.0.0.1:9")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_connect_to_an_unreachable_server_fails_clearly() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = _run_cli("connect", "chat:1.0.0@alice", "--api-url", url)
    assert result.returncode == 1
    assert result.stderr.startswith(f"rondevu connect: cannot reach the signaling server at {url}")
    assert "Traceback" not in result.stderr


def test_key_file_broken_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text('{"publicKey": "AAAA"}')
    result = _run_cli(
        "publish", "chat:1.0.0", "--api-url", "http://127.0.0.1:9", "--key-file", str(key)
    )
    assert result.returncode == 2
    assert "has no privateKey" in result.stderr


@pytest.fixture
def server_url(processes: list[subprocess.Popen[bytes]]) -> str:
    """A real ``rondevu serve`` on 127.0.0.1 (free port, SQLite :memory:)."""
    server = rondevu("serve", "--port", "0", "--log-level", "info")
    processes.append(server)
    listening = Lines(server.stderr).wait_for(r'"msg": "listening"')
    return f"http://127.0.0.1:{json.loads(listening)['port']}"


def test_publish_and_connect_exchange_a_line(
    server_url: str, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    key = tmp_path / "alice.json"
    username = f"alice-{os.getpid()}"
    common = ["--api-url", server_url, "--host-address", "127.0.0.1"]
    publisher = rondevu(
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

    peer = rondevu("connect", f"chat:1.0.0@{username}", *common, stdin=subprocess.PIPE)
    processes.append(peer)
    peer_status = Lines(peer.stderr)
    peer_status.wait_for(r"connected to chat:1\.0\.0@")
    assert peer.stdin is not None
    peer.stdin.write(b"hello over webrtc\n")
    peer.stdin.flush()
    peer_out = Lines(peer.stdout)
    assert peer_out.wait_for("hello") == "hello over webrtc"  # the echo came back
    assert Lines(publisher.stdout).wait_for("hello").endswith(": hello over webrtc (echoed)")

    # EOF on stdin: connect closes everything and exits 0.
    peer.stdin.close()
    assert peer.wait(DEADLINE_S) == 0
    # SIGTERM: publish closes everything and exits 0.
    publisher.send_signal(signal.SIGTERM)
    assert publisher.wait(DEADLINE_S) == 0
    # Both said goodbye, without a traceback.
    assert "rondevu: SIGTERM: closing" in publisher_status.rest()
    peer_status.rest()
    assert not any("Traceback" in line for line in publisher_status.seen + peer_status.seen)


def test_interactive_publish_chats_both_ways(
    server_url: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    username = f"carol-{os.getpid()}"
    common = ["--api-url", server_url, "--host-address", "127.0.0.1"]
    publisher = rondevu(
        "publish",
        "talk:1.0.0",
        "--interactive",
        "--username",
        username,
        *common,
        stdin=subprocess.PIPE,
    )
    processes.append(publisher)
    publisher_status = Lines(publisher.stderr)
    publisher_status.wait_for(r"published talk:1\.0\.0@.*\(interactive\)")
    peer = rondevu("connect", f"talk:1.0.0@{username}", *common, stdin=subprocess.PIPE)
    processes.append(peer)
    Lines(peer.stderr).wait_for(r"connected to talk:1\.0\.0@")
    publisher_status.wait_for(r"connected \(offer ")
    assert peer.stdin is not None
    assert publisher.stdin is not None

    peer.stdin.write(b"hi carol\n")
    peer.stdin.flush()
    assert Lines(publisher.stdout).wait_for("hi carol").endswith(": hi carol")
    publisher.stdin.write(b"hi there\n")
    publisher.stdin.flush()
    assert Lines(peer.stdout).wait_for("hi there") == "hi there"

    # EOF on the publisher's stdin ends it cleanly; then the peer's.
    publisher.stdin.close()
    assert publisher.wait(DEADLINE_S) == 0
    peer.stdin.close()
    assert peer.wait(DEADLINE_S) == 0


def test_a_key_file_keeps_an_anonymous_name_across_restarts(
    server_url: str, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    # The server binds a key to the first name it claims: a restart with the same key
    # file but a fresh anon name was refused ("already claimed a different username").
    key = tmp_path / "anon.json"
    common = ["--api-url", server_url, "--host-address", "127.0.0.1", "--key-file", str(key)]
    names = []
    for _ in range(2):
        publisher = rondevu("publish", "chat:1.0.0", *common)
        processes.append(publisher)
        line = Lines(publisher.stderr).wait_for(r"published chat:1\.0\.0@anon-\S+ \(echo\)")
        names.append(line.split("@")[1].split()[0])
        publisher.send_signal(signal.SIGTERM)
        assert publisher.wait(DEADLINE_S) == 0
    assert names[0] == names[1] == json.loads(key.read_text())["username"]
