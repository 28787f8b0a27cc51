"""The ``rondevu`` command line, run as real subprocesses (the console script's module).

Every subprocess is bounded by a deadline and killed in teardown; synchronisation is by
reading its output lines until the expected one appears, never by sleeping.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 60.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "schemas"), str(ROOT / "drivers")]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def rondevu(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
    """Start ``rondevu ARGS`` (``python -m rondevu.cli``) with piped, line-buffered text."""
    return subprocess.Popen(
        [sys.executable, "-m", "rondevu.cli", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=_env(),
        cwd=ROOT,
    )


class Lines:
    """Reads a subprocess's stdout line by line with a deadline (no sleeping)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.process = process
        self.seen: list[str] = []
        self._selector = selectors.DefaultSelector()
        self._selector.register(process.stdout, selectors.EVENT_READ)

    def wait_for(self, pattern: str, timeout: float = DEADLINE_S) -> str:
        """The first new line matching ``pattern``; fails at the deadline or at EOF."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                pytest.fail(f"no line matching {pattern!r} in time; saw {self.seen!r}")
            line = self.process.stdout.readline()
            if not line:
                pytest.fail(f"EOF before a line matching {pattern!r}; saw {self.seen!r}")
            self.seen.append(line.rstrip("\n"))
            if re.search(pattern, line):
                return line


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Subprocesses to kill (if still running) when the test ends."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=DEADLINE_S)


def test_demo_runs_the_whole_timeline() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rondevu.cli", "demo"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=DEADLINE_S,
        check=False,
    )
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
    result = subprocess.run(
        [sys.executable, "-m", "rondevu.cli", "demo", "--quiet"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=DEADLINE_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"rondevu demo: OK in \d+ ms\n", result.stdout)


def test_demo_timeout_fails_with_the_step_named() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rondevu.cli", "demo", "--timeout", "0.001"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=DEADLINE_S,
        check=False,
    )
    assert result.returncode == 1
    assert re.search(r"rondevu demo: FAILED: timed out after 0\.001 s while \w", result.stdout)
    assert "Traceback" not in result.stdout + result.stderr
