"""``rondevu serve`` as a person meets it, run as real subprocesses: every start-up that
cannot go on is one line on stderr (exit 2 for a bad value, 3 for a database that does
not open), and a server that answers says where, once, in words.

Synchronisation is by reading the server's stderr lines, never by sleeping.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from rondevu_server.cli import EXIT_NO_DATABASE
from tests import cli_testing
from tests.cli_testing import (
    DEADLINE_S,
    Lines,
    Processes,
    closed_url,
    no_traceback,
    run_cli,
    start_cli,
    stderr_lines,
)

processes = cli_testing.processes

BAD_FLAGS = [
    (["--port", "99999"], "argument --port: '99999' is not a port number (0..65535)"),
    (["--port", "-1"], "argument --port: '-1' is not a port number (0..65535)"),
    (["--port", "abc"], "argument --port: 'abc' is not a port number (0..65535)"),
    (["--log-level", "loud"], "argument --log-level: 'loud' is not one of debug, info,"),
    (["--db", "mysql://x/y"], "argument --db: 'mysql://x/y': mysql:// is not supported"),
    (["--db", "postgresql://h:abc/x"], "'postgresql://h:abc/x' has an invalid port"),
    (["--db", ""], "argument --db: an empty value is not a database"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_FLAGS)
def test_a_bad_flag_is_one_line_and_exit_2(args: list[str], expected: str) -> None:
    result = run_cli("serve", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = stderr_lines(result.stderr)
    assert line.startswith("rondevu serve: "), line
    assert expected in line
    assert line.endswith("(see 'rondevu serve --help')")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("RONDEVU_PORT", "70000", "RONDEVU_PORT: '70000' is not a port number (0..65535)"),
        ("RONDEVU_LOG_LEVEL", "loud", "RONDEVU_LOG_LEVEL: 'loud' is not one of debug,"),
        ("RONDEVU_DB", "mysql://x/y", "RONDEVU_DB: 'mysql://x/y': mysql:// is not supported"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(name: str, value: str, expected: str) -> None:
    result = run_cli("serve", env={name: value})  # checked before anything is bound
    assert result.returncode == 2
    [line] = stderr_lines(result.stderr)
    assert line.startswith(f"rondevu serve: {expected}"), line


def test_a_dsn_password_never_shows() -> None:
    result = run_cli("serve", "--db", "mysql://user:s3cret@db/x")
    assert result.returncode == 2
    assert "s3cret" not in result.stderr
    assert "'mysql://user@db/x'" in result.stderr


def _unreachable_dsn() -> str:
    port = closed_url().rsplit(":", 1)[1]
    return f"postgresql://postgres:s3cret@127.0.0.1:{port}/x"


@pytest.mark.parametrize(
    ("db", "expected"),
    [
        (
            lambda tmp: _unreachable_dsn(),
            r"cannot open the PostgreSQL database postgresql://postgres@127\.0\.0\.1:\d+/x: "
            r"Connection refused$",
        ),
        (
            lambda tmp: str(tmp / "missing" / "x.db"),
            r"cannot open the SQLite database .*/missing/x\.db: the folder .*/missing does "
            r"not exist$",
        ),
        (
            lambda tmp: "sqlite://" + str(tmp / "missing" / "x.db"),
            r"cannot open the SQLite database .*/missing/x\.db: the folder .*/missing does ",
        ),
        (
            lambda tmp: str(Path(__file__)),
            r"cannot open the SQLite database .*test_cli_serve\.py: file is not a database$",
        ),
    ],
    ids=["postgresql-unreachable", "sqlite-missing-folder", "sqlite-url-missing", "not-a-db"],
)
def test_a_database_that_does_not_open_is_one_line_and_exit_3(
    db: Callable[[Path], str], expected: str, tmp_path: Path
) -> None:
    result = run_cli("serve", "--port", "0", "--db", db(tmp_path))
    assert result.returncode == EXIT_NO_DATABASE == 3
    assert result.stdout == ""
    [line] = stderr_lines(result.stderr)  # not even the JSON "listening" line
    assert re.search(rf"^rondevu serve: {expected}", line), line
    assert "s3cret" not in line
    assert no_traceback(result.stderr)


def _ready(processes: Processes, *args: str, env: dict[str, str] | None = None) -> str:
    """Start ``serve`` on a free port; its URL, read from the line for people."""
    server = start_cli("serve", "--port", "0", *args, env=env)
    processes.append(server)
    line = Lines(server.stderr).wait_for(r"^rondevu serve: listening on ")
    found = re.fullmatch(r"rondevu serve: listening on (http://127\.0\.0\.1:\d+)", line)
    assert found is not None, line
    return found.group(1)


def test_a_ready_server_says_where_and_health_names_the_release(processes: Processes) -> None:
    url = _ready(processes)
    health = httpx.get(f"{url}/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["version"] == metadata.version("rondevu") != "unknown"
    assert httpx.get(f"{url}/", timeout=10).json()["version"] == metadata.version("rondevu")


def test_the_version_variable_still_wins(processes: Processes) -> None:
    url = _ready(processes, env={"RONDEVU_VERSION": "2026.12-site"})
    assert httpx.get(f"{url}/health", timeout=10).json()["version"] == "2026.12-site"


def test_a_sqlite_file_in_an_existing_folder_opens(processes: Processes, tmp_path: Path) -> None:
    url = _ready(processes, "--db", str(tmp_path / "rondevu.db"), "--log-level", "WARNING")
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert (tmp_path / "rondevu.db").exists()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_a_signal_stops_it_cleanly_with_the_commands_exit_code(
    processes: Processes, signum: int, code: int
) -> None:
    server = start_cli("serve", "--port", "0")
    processes.append(server)
    errors = Lines(server.stderr)
    errors.wait_for(r"^rondevu serve: listening on ")
    server.send_signal(signum)
    rest = errors.rest()
    assert server.wait(DEADLINE_S) == code
    assert any('"msg": "stopped"' in line for line in rest), rest  # storage closed first
    assert no_traceback(rest)


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--log-format", "loud"], None, "argument --log-format: 'loud' is not one of auto,"),
        ([], {"RONDEVU_LOG_FORMAT": "xml"}, "RONDEVU_LOG_FORMAT: 'xml' is not one of auto,"),
    ],
)
def test_a_bad_log_format_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str] | None, expected: str
) -> None:
    result = run_cli("serve", *args, env=env)
    assert result.returncode == 2
    [line] = stderr_lines(result.stderr)
    assert expected in line, line


def _log_lines_until_listening(
    *args: str, env: dict[str, str] | None = None, terminal: bool = False
) -> list[str]:
    """Start ``serve`` with stderr on a pipe (or on a pseudo-terminal, as when a person
    runs it), stop it once it listens; its log lines (not the line for people)."""
    if terminal:
        reader, writer = pty.openpty()
        server = subprocess.Popen(
            [sys.executable, "-m", "rondevu.cli", "serve", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=writer,
            env=cli_testing.cli_env(env),
            cwd=cli_testing.ROOT,
        )
        os.close(writer)
        errors = Lines(reader)
    else:
        reader = -1
        server = start_cli("serve", "--port", "0", *args, env=env)
        errors = Lines(server.stderr)
    try:
        errors.wait_for(r"^rondevu serve: listening on ")
        server.send_signal(signal.SIGTERM)
        errors.rest()
        assert server.wait(DEADLINE_S) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(DEADLINE_S)
        if reader >= 0:
            os.close(reader)
    return [line for line in errors.seen if line and not line.startswith("rondevu serve: ")]


def test_logs_on_a_pipe_are_json_unless_text_is_asked_for() -> None:
    piped = _log_lines_until_listening()
    assert piped
    assert all(_is_json(line) for line in piped), piped
    assert any(json.loads(line)["msg"] == "listening" for line in piped)

    text = _log_lines_until_listening(env={"RONDEVU_LOG_FORMAT": "TEXT"})
    assert text
    assert not any(_is_json(line) for line in text), text
    listening = next(line for line in text if " listening " in line)
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} info  listening host=127\.0\.0\.1 port=\d+", listening)


def test_logs_on_a_terminal_are_for_people_unless_json_is_asked_for() -> None:
    """stderr on a pseudo-terminal, as when a person runs ``rondevu serve``."""
    for args, want_json in (([], False), (["--log-format", "json"], True)):
        logs = _log_lines_until_listening(*args, terminal=True)
        assert logs
        assert all(_is_json(line) == want_json for line in logs), logs
