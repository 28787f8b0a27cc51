"""Running the ``rondevu`` command as real subprocesses, for the ``test_cli*`` suites.

Every subprocess is bounded by a deadline and killed in teardown (`Processes`);
synchronisation is by reading its output lines until the expected one appears
(`Lines`), never by sleeping.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import pytest

__all__ = [
    "DEADLINE_S",
    "ROOT",
    "Lines",
    "Processes",
    "cli_env",
    "closed_url",
    "no_traceback",
    "processes",
    "run_cli",
    "start_cli",
    "start_serve",
    "start_server",
    "stderr_lines",
]

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 60.0


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``rondevu`` subprocess: the source tree importable,
    unbuffered output, no ``RONDEVU_API_URL`` from the caller unless ``extra`` sets it."""
    env = {key: value for key, value in os.environ.items() if key != "RONDEVU_API_URL"}
    paths = [str(ROOT), str(ROOT / "schemas"), str(ROOT / "drivers")]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_cli(
    *args: str,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.PIPE,
    env: Mapping[str, str] | None = None,
    python_flags: tuple[str, ...] = (),
    prefix: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start ``rondevu ARGS`` (``python -m rondevu.cli``) with unbuffered byte pipes;
    ``prefix`` comes before the interpreter (``ip netns exec HOST``: another host)."""
    return subprocess.Popen(
        [*prefix, sys.executable, *python_flags, "-m", "rondevu.cli", *args],
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=cli_env(env),
        cwd=ROOT,
    )


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``rondevu ARGS`` to completion (bounded), capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", "rondevu.cli", *args],
        capture_output=True,
        text=True,
        input=input,
        env=cli_env(env),
        cwd=ROOT,
        timeout=DEADLINE_S,
        check=False,
    )


def closed_url() -> str:
    """The URL of a loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def stderr_lines(text: str) -> list[str]:
    """The non-empty lines of an output."""
    return [line for line in text.splitlines() if line.strip()]


def no_traceback(*outputs: str | list[str]) -> bool:
    """True when no output shows a traceback or an exception group."""
    text = "\n".join(part if isinstance(part, str) else "\n".join(part) for part in outputs)
    return "Traceback" not in text and "ExceptionGroup" not in text


class Lines:
    """Reads one pipe of a subprocess line by line with a deadline (no sleeping).

    Reads the raw file descriptor (no Python buffering between ``select`` and the
    read), so a line is seen as soon as the process writes it.
    """

    def __init__(self, pipe: IO[bytes] | int | None) -> None:
        assert pipe is not None
        self.fd = pipe if isinstance(pipe, int) else pipe.fileno()
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
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # a pty whose other side closed reads as EIO
                chunk = b""
            if not chunk:
                self._eof = True
                if self._pending:
                    self._pending += b"\n"
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        text = line.decode("utf-8", "replace").removesuffix("\r")
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


class Processes(list[subprocess.Popen[bytes]]):
    """Subprocesses to stop (if still running) and reap when the block ends."""

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self:
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


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Subprocesses to stop when the test ends (import it as a fixture)."""
    with Processes() as started:
        yield started


def start_server(started: Processes) -> str:
    """A real ``rondevu serve`` on 127.0.0.1 (free port, SQLite :memory:); its URL."""
    server = start_cli("serve", "--port", "0", "--log-level", "info")
    started.append(server)
    line = Lines(server.stderr).wait_for(r"listening")
    try:
        port = int(json.loads(line)["port"])
    except (ValueError, KeyError, TypeError):  # a human-readable log line
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert found is not None, line
        port = int(found.group(1))
    return f"http://127.0.0.1:{port}"


def start_serve(
    started: Processes, *args: str, env: Mapping[str, str] | None = None, ready: int = 1
) -> tuple[str, Lines]:
    """``rondevu serve --port 0 ARGS`` on 127.0.0.1, once ``ready`` server processes
    (workers) completed their start-up: its URL and its log lines (JSON)."""
    server = start_cli("serve", "--port", "0", *args, env=env)
    started.append(server)
    lines = Lines(server.stderr)
    port = int(json.loads(lines.wait_for(r'"msg": "(listening|workers)"'))["port"])
    for _ in range(ready):
        lines.wait_for(r"Application startup complete")
    return f"http://127.0.0.1:{port}", lines
