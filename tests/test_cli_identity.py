"""``rondevu keygen`` and ``rondevu whoami``, run as real subprocesses (``--check``
against a real ``rondevu serve`` on 127.0.0.1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rondevu import Identity
from tests import cli_testing
from tests.cli_testing import (
    Lines,
    Processes,
    closed_url,
    run_cli,
    start_cli,
    start_server,
    stderr_lines,
)

processes = cli_testing.processes


def _fields(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines())


def test_keygen_writes_a_private_identity_file_and_shows_it(tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    result = run_cli("keygen", str(path), "--username", "alice")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    identity = Identity.load(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert _fields(result.stdout) == {
        "file": str(path),
        "username": "alice",
        "public key": identity.public_key,
    }
    assert identity.keypair.private_key not in result.stdout


def test_keygen_without_a_name_picks_an_anonymous_one(tmp_path: Path) -> None:
    path = tmp_path / "anon.json"
    result = run_cli("keygen", str(path))
    assert result.returncode == 0, result.stderr
    assert _fields(result.stdout)["username"].startswith("anon-")


def test_keygen_never_replaces_a_file_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "bob.json"
    assert run_cli("keygen", str(path), "--username", "bob").returncode == 0
    before = path.read_text()
    refused = run_cli("keygen", str(path), "--username", "bob")
    assert refused.returncode == 2
    assert stderr_lines(refused.stderr) == [
        f"rondevu keygen: {path} exists; not replacing it (--force replaces it, and its "
        "name's key with it)"
    ]
    assert path.read_text() == before
    forced = run_cli("keygen", str(path), "--username", "bob", "--force")
    assert forced.returncode == 0
    assert path.read_text() != before


def test_keygen_into_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "key.json"
    result = run_cli("keygen", str(path))
    assert result.returncode == 2
    assert stderr_lines(result.stderr) == [
        f"rondevu keygen: cannot write {path}: No such file or directory"
    ]


def test_whoami_shows_the_name_and_public_key_only(tmp_path: Path) -> None:
    path = tmp_path / "carol.json"
    identity = Identity.generate("carol")
    identity.save(path)
    result = run_cli("whoami", str(path))
    assert result.returncode == 0
    assert _fields(result.stdout) == {
        "file": str(path),
        "username": "carol",
        "public key": identity.public_key,
    }
    assert identity.keypair.private_key not in result.stdout + result.stderr


def test_whoami_of_a_bad_file_is_one_line(tmp_path: Path) -> None:
    missing = run_cli("whoami", str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert stderr_lines(missing.stderr) == [
        f"rondevu whoami: key file {tmp_path / 'nope.json'}: No such file or directory"
    ]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"username": "dave", "publicKey": "x", "privateKey": "y"}))
    result = run_cli("whoami", str(broken))
    assert result.returncode == 2
    [line] = stderr_lines(result.stderr)
    assert line.startswith(f"rondevu whoami: key file {broken}: Private key must be")


def test_whoami_check_asks_the_server_who_holds_the_name(
    processes: Processes, tmp_path: Path
) -> None:
    url = start_server(processes)
    name = f"erin-{os.getpid()}"
    ours = tmp_path / "ours.json"
    assert run_cli("keygen", str(ours), "--username", name).returncode == 0

    free = run_cli("whoami", str(ours), "--check", "--api-url", url)
    assert free.returncode == 0, free.stderr
    assert _fields(free.stdout)["server"].startswith(f"{url}: name is free")

    # Publishing with the file claims the name for its key.
    publisher = start_cli("publish", "chat:1.0.0", "--key-file", str(ours), "--api-url", url)
    processes.append(publisher)
    Lines(publisher.stderr).wait_for(r"published chat:1\.0\.0@")
    held = run_cli("whoami", str(ours), "--check", env={"RONDEVU_API_URL": url})
    assert held.returncode == 0, held.stderr
    assert _fields(held.stdout)["server"].startswith(f"{url}: name held by this key until ")

    # Another key for the same name: told, and exit 1.
    theirs = tmp_path / "theirs.json"
    assert run_cli("keygen", str(theirs), "--username", name).returncode == 0
    other = run_cli("whoami", str(theirs), "--check", "--api-url", url)
    assert other.returncode == 1
    assert "name held by ANOTHER key" in _fields(other.stdout)["server"]


def test_whoami_check_with_no_server_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "fred.json"
    Identity.generate("fred").save(path)
    url = closed_url()
    result = run_cli("whoami", str(path), "--check", "--api-url", url)
    assert result.returncode == 1
    [line] = stderr_lines(result.stderr)
    assert line.startswith(f"rondevu whoami: cannot reach the signaling server at {url}")
