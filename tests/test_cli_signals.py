"""Ctrl-C and SIGTERM in the ``rondevu`` commands, sent to real subprocesses.

The contract (rondevu.cli): Ctrl-C (SIGINT) at any moment, imports included, exits 130
with no traceback; a graceful stop closes everything first, and a second Ctrl-C during
that cleanup quits at once, still 130; SIGTERM is a graceful stop with exit 0.  Each
signal is sent once the process has printed the line that proves it is where the test
wants it, never after a sleep.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests import cli_testing
from tests.cli_testing import (
    DEADLINE_S,
    Lines,
    Processes,
    closed_url,
    no_traceback,
    start_cli,
    start_server,
)

processes = cli_testing.processes


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """One real ``rondevu serve`` for the module's tests (each uses its own names)."""
    with Processes() as started:
        yield start_server(started)


def test_ctrl_c_during_imports_exits_130_without_a_traceback(processes: Processes) -> None:
    # -X importtime reports each import as it completes: once anyio's line is out, the
    # client stack (aiortc, httpx, pydantic...) is still being imported.
    command = start_cli(
        "connect", "chat:1.0.0@alice", "--api-url", closed_url(), python_flags=("-X", "importtime")
    )
    processes.append(command)
    errors = Lines(command.stderr)
    errors.wait_for(r"\|\s*anyio\s*$")
    command.send_signal(signal.SIGINT)
    assert command.wait(DEADLINE_S) == 130
    rest = [line for line in errors.rest() if not line.startswith("import time:")]
    assert rest == ["rondevu connect: interrupted"]
    assert no_traceback(errors.seen)


def test_ctrl_c_while_connecting_closes_and_exits_130(
    server_url: str, processes: Processes
) -> None:
    fqn = f"chat:1.0.0@nobody-{os.getpid()}"  # never published: connect keeps trying
    command = start_cli("connect", fqn, "--api-url", server_url)
    processes.append(command)
    errors = Lines(command.stderr)
    errors.wait_for(rf"connecting to {fqn}")
    command.send_signal(signal.SIGINT)
    assert command.wait(DEADLINE_S) == 130
    assert "rondevu: SIGINT: closing (again to quit at once)" in errors.rest()
    assert no_traceback(errors.seen)


def test_a_second_ctrl_c_quits_at_once_still_130(server_url: str, processes: Processes) -> None:
    fqn = f"chat:1.0.0@nobody-{os.getpid()}"
    command = start_cli("connect", fqn, "--api-url", server_url)
    processes.append(command)
    errors = Lines(command.stderr)
    errors.wait_for(rf"connecting to {fqn}")
    command.send_signal(signal.SIGINT)
    errors.wait_for(r"SIGINT: closing")
    # Wherever the second one lands (cleanup, or the interpreter's own exit), the
    # outcome is the same: 130 and no traceback.
    command.send_signal(signal.SIGINT)
    assert command.wait(DEADLINE_S) == 130
    errors.rest()
    assert no_traceback(errors.seen)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_publish_stops_gracefully_on_a_signal(
    server_url: str, processes: Processes, signum: signal.Signals, code: int
) -> None:
    command = start_cli(
        "publish",
        "chat:1.0.0",
        "--username",
        f"gina-{signum.name.lower()}-{os.getpid()}",
        "--api-url",
        server_url,
    )
    processes.append(command)
    errors = Lines(command.stderr)
    errors.wait_for(r"published chat:1\.0\.0@")
    command.send_signal(signum)
    assert command.wait(DEADLINE_S) == code
    assert f"rondevu: {signum.name}: closing (again to quit at once)" in errors.rest()
    assert no_traceback(errors.seen)


def test_ctrl_c_in_the_demo_exits_130_with_one_line(processes: Processes) -> None:
    command = start_cli("demo")
    processes.append(command)
    Lines(command.stdout).wait_for(r"signaling server up at")
    command.send_signal(signal.SIGINT)
    assert command.wait(DEADLINE_S) == 130
    errors = Lines(command.stderr)
    assert errors.rest() == ["rondevu demo: interrupted"]
