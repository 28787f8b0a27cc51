"""`rondevu.Identity`: the key file as an API (generate, save, load), on real files."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rondevu
from rondevu import Identity, IdentityError, Rondevu
from rondevu_core.rules.signing import KeyPair, verify_signature

_names = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,30}[a-z0-9]", fullmatch=True)


def test_it_is_part_of_the_public_api() -> None:
    assert rondevu.Identity is Identity
    assert "Identity" in rondevu.__all__
    assert "IdentityError" in rondevu.__all__


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25)
@given(name=_names, seed=st.binary(min_size=32, max_size=32))
def test_save_then_load_gives_the_same_identity(tmp_path: Path, name: str, seed: bytes) -> None:
    identity = Identity(username=name, keypair=KeyPair.from_seed(seed))
    path = tmp_path / f"{name}.json"
    identity.save(path, overwrite=True)
    assert Identity.load(path) == identity
    assert json.loads(path.read_text()) == {
        "username": name,
        "publicKey": identity.keypair.public_key,
        "privateKey": identity.keypair.private_key,
    }


def test_a_saved_file_is_private_and_never_replaced_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    first = Identity.generate("alice")
    first.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        Identity.generate("alice").save(path)
    assert Identity.load(path) == first
    second = Identity.generate("alice")
    second.save(path, overwrite=True)
    assert Identity.load(path) == second
    assert path.stat().st_mode & 0o777 == 0o600
    # Nothing left behind by the writes.
    assert [entry.name for entry in tmp_path.iterdir()] == ["alice.json"]


def test_a_generated_identity_signs_as_its_public_key() -> None:
    identity = Identity.generate()
    assert identity.username.startswith("anon-")
    signature = identity.keypair.sign("poll:someone:1")
    assert verify_signature(identity.public_key, "poll:someone:1", signature)


def test_the_private_key_stays_out_of_repr() -> None:
    identity = Identity.generate("bob")
    assert identity.keypair.private_key not in repr(identity)
    assert identity.public_key in repr(identity)


def test_load_or_create_creates_once_then_loads(tmp_path: Path) -> None:
    path = tmp_path / "id.json"
    created, was_new = Identity.load_or_create(path, username="carol")
    loaded, again_new = Identity.load_or_create(path, username="carol")
    assert (was_new, again_new) == (True, False)
    assert loaded == created


def test_processes_creating_one_file_at_once_agree_on_one_identity(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    results: list[Identity] = []
    start = threading.Barrier(8)

    def create() -> None:
        start.wait()
        results.append(Identity.load_or_create(path)[0])

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8
    assert all(result == results[0] for result in results)
    assert Identity.load(path) == results[0]


def test_a_bare_exported_pair_takes_the_given_username(tmp_path: Path) -> None:
    pair = KeyPair.generate(os.urandom)
    path = tmp_path / "pair.json"
    path.write_text(json.dumps({"publicKey": pair.public_key, "privateKey": pair.private_key}))
    assert Identity.load(path, username="dave") == Identity(username="dave", keypair=pair)
    with pytest.raises(IdentityError, match=r"pair\.json: no username$"):
        Identity.load(path)


def _pair() -> dict[str, str]:
    pair = KeyPair.generate(os.urandom)
    return {"username": "erin", "publicKey": pair.public_key, "privateKey": pair.private_key}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({**_pair(), "privateKey": None}).encode(), "no privateKey"),
        (json.dumps({**_pair(), "publicKey": 7}).encode(), "publicKey is not a string"),
        (json.dumps({**_pair(), "username": "Erin!"}).encode(), "invalid username 'Erin!'"),
        (json.dumps({**_pair(), "privateKey": "AAAA"}).encode(), "Private key must be"),
        (
            json.dumps({**_pair(), "publicKey": KeyPair.generate(os.urandom).public_key}).encode(),
            "Public key does not match private key",
        ),
        (b" " * (64 * 1024 + 1), "larger than"),
    ],
)
def test_a_bad_file_fails_at_load_naming_the_file(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(IdentityError) as raised:
        Identity.load(path)
    assert str(raised.value).startswith(f"key file {path}: ")
    assert problem in str(raised.value)


def test_an_unreadable_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Identity.load(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError):
        Identity.generate("frank").save(tmp_path / "no" / "such" / "dir.json")


def test_a_loaded_identity_is_what_the_client_takes(tmp_path: Path) -> None:
    path = tmp_path / "gina.json"
    Identity.generate("gina").save(path)
    identity = Identity.load(path)
    client = Rondevu.connect(
        "http://127.0.0.1:9", username=identity.username, keypair=identity.keypair
    )
    assert client.username == "gina"
    assert client.public_key == identity.public_key
