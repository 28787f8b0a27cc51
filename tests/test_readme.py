"""README's promises, kept: its tour runs as written, its commands exist, its links lead
somewhere, and it speaks to people (no internal bug ids, no file that is not here).

The tour is run verbatim against a real ``rondevu serve`` on a free port: the shell
commands get the server through ``RONDEVU_API_URL`` (so not a character of them
changes), the Python example gets the server's URL in place of the default one.
Synchronisation is by reading the processes' output lines, never by sleeping.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rondevu.cli import build_parser
from tests import cli_testing
from tests.cli_testing import (
    DEADLINE_S,
    ROOT,
    Lines,
    Processes,
    cli_env,
    no_traceback,
    start_server,
)

processes = cli_testing.processes

README = (ROOT / "README.md").read_text(encoding="utf-8")
DEFAULT_URL = "http://127.0.0.1:3000"
COMMAND = ".venv/bin/rondevu "


def section(title: str) -> str:
    """README's text from the heading ``## title`` to the next ``## `` heading."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert found is not None, title
    return found.group(1)


def fenced(text: str, language: str) -> list[str]:
    """The fenced code blocks of ``language`` in ``text``."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def commands(text: str) -> list[str]:
    """The ``rondevu`` command lines of the shell blocks in ``text``."""
    return [
        line.strip()
        for block in fenced(text, "sh")
        for line in block.splitlines()
        if line.strip().startswith(COMMAND)
    ]


def _argv(line: str) -> list[str]:
    """The command line as ``python -m rondevu.cli`` (what the console script runs)."""
    return [sys.executable, "-m", "rondevu.cli", *shlex.split(line.removeprefix(COMMAND))]


def _start(line: str, cwd: Path, url: str, started: Processes) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        _argv(line),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=cli_env({"RONDEVU_API_URL": url}),
        cwd=cwd,
    )
    started.append(process)
    return process


def test_the_tour_runs_as_written(processes: Processes, tmp_path: Path) -> None:
    tour = section("A five-minute tour on one machine")
    serve, keygen, publish, connect = commands(tour)
    assert serve.startswith(".venv/bin/rondevu serve")  # README's server: ours on a free port
    assert "--host-address 127.0.0.1" in publish
    assert "--host-address 127.0.0.1" in connect
    url = start_server(processes)

    made = subprocess.run(
        _argv(keygen), cwd=tmp_path, env=cli_env(), capture_output=True, timeout=DEADLINE_S
    )
    assert made.returncode == 0, made.stderr
    alice = _start(publish, tmp_path, url, processes)
    Lines(alice.stderr).wait_for(r"published chat:1\.0\.0@alice")

    # Step 3: a line out, alice's echo back (raw: stdout is a pipe here).
    bob = _start(connect, tmp_path, url, processes)
    assert bob.stdin is not None
    bob.stdin.write(b"hello\n")
    assert Lines(bob.stdout).wait_for(r"hello") == "hello"
    bob.stdin.close()  # Ctrl-D
    assert bob.wait(DEADLINE_S) == 0

    # Step 4: README's Python example, against the same server and publisher.
    [example] = fenced(tour, "python")
    assert example.count(DEFAULT_URL) == 1
    script = tmp_path / "hello.py"
    script.write_text(example.replace(DEFAULT_URL, url), encoding="utf-8")
    ran = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "alice says: hello from Python\n"
    assert no_traceback(ran.stderr)


@pytest.mark.parametrize("line", commands(README))
def test_every_command_in_readme_is_a_valid_command_line(line: str) -> None:
    args = build_parser().parse_args(shlex.split(line.removeprefix(COMMAND)))
    assert args.command in line


def test_readme_names_only_files_that_exist() -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), target
    folders = {entry.name for entry in ROOT.iterdir() if entry.is_dir()}
    for path in re.findall(r"`((?:[\w.-]+/)+[\w.-]*)`", README):
        if path.split("/")[0] in folders - {".venv"}:  # a path in this repository
            assert (ROOT / path).exists(), path
    assert "PROTOCOL.md" not in README


def test_readme_speaks_to_people() -> None:
    # Internal ids of the original's bugs belong in docs/compatibility.md, in words.
    assert re.findall(r"\b[BSD]\d{1,2}\b", README) == []
    # Options that ``rondevu serve`` does not have (bench/server_bench.py's --processes).
    assert "--processes" not in README


def test_docs_link_only_to_files_that_exist() -> None:
    for page in ("compatibility.md", "deploy.md", "performance.md"):
        text = (ROOT / "docs" / page).read_text(encoding="utf-8")
        assert "PROTOCOL.md" not in text, page
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (ROOT / "docs" / target).exists(), (page, target)
