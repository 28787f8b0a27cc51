"""`Identity`: a username with its Ed25519 key pair, saved to and loaded from a key file.

A signaling server binds a username to the first key that claims it, so keeping a name
across runs means keeping both halves together.  An `Identity` is that pair, and its
key file is the one format for it: ``rondevu keygen`` writes it, ``rondevu whoami``
shows it, ``--key-file`` of ``rondevu publish`` / ``connect`` reads it, and a program
uses it as::

    identity = Identity.load("alice.json")
    async with Rondevu.connect(url, username=identity.username,
                               keypair=identity.keypair) as rondevu:
        ...

The file is one JSON object (keys in the wire encoding: standard base64 with padding of
the 32-byte public point and of the 32-byte private seed)::

    {"username": "alice", "publicKey": "…", "privateKey": "…"}

Invariants: a file is created with mode 0600 and written whole or not at all (a
temporary file in the same folder, then linked or renamed into place), and an existing
file is never replaced unless asked.  Loading checks every field, and that the public
key belongs to the private one, so a wrong file fails at load with `IdentityError`
naming it rather than later as an "Invalid signature" from the server.  The private key
never appears in a ``repr``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rondevu_core.errors import RondevuError
from rondevu_core.rules.signing import KeyPair
from rondevu_core.rules.usernames import generate_anonymous_username, validate_username

__all__ = ["KEY_FILE_MODE", "Identity", "IdentityError"]

KEY_FILE_MODE = 0o600
"""Owner read/write only: the file holds a private key."""

_MAX_KEY_FILE_BYTES = 64 * 1024
"""Far above any real key file (about 200 bytes): refuses to read a big file by mistake."""


class IdentityError(RondevuError):
    """A key file (or key-file data) that is not a valid identity; the text names why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """A username and the Ed25519 key pair that claims it.

    Build one with `generate`, `load` or `from_dict`; keep it with `save`.  Pass its
    fields to ``Rondevu.connect(url, username=identity.username,
    keypair=identity.keypair)``.  Raises `IdentityError` for an invalid username.
    """

    username: str
    keypair: KeyPair

    def __post_init__(self) -> None:
        try:
            validate_username(self.username)
        except RondevuError as error:
            raise IdentityError(f"invalid username {self.username!r}: {error}") from None

    def __repr__(self) -> str:
        return f"Identity(username={self.username!r}, public_key={self.public_key!r})"

    @property
    def public_key(self) -> str:
        """The base64 public key (what a server stores for the username)."""
        return self.keypair.public_key

    @classmethod
    def generate(cls, username: str | None = None) -> Identity:
        """A new key pair for ``username``, or for a fresh ``anon-…`` name when None."""
        if username is None:
            username = generate_anonymous_username(time.time_ns() // 1_000_000, os.urandom)
        return cls(username=username, keypair=KeyPair.generate(os.urandom))

    # -- the key-file format -----------------------------------------------------------

    def to_dict(self) -> dict[str, str]:
        """The key file's JSON object (it contains the private key: keep it secret)."""
        return {
            "username": self.username,
            "publicKey": self.keypair.public_key,
            "privateKey": self.keypair.private_key,
        }

    @classmethod
    def from_dict(cls, data: object, *, username: str | None = None) -> Identity:
        """The identity in a decoded key file; raises `IdentityError` naming the problem.

        ``username`` is used when ``data`` has none (a bare ``{"publicKey",
        "privateKey"}`` pair, as exported by other Rondevu clients); a file's own
        username always wins over it.
        """
        if not isinstance(data, Mapping):
            raise IdentityError("not a JSON object")
        fields: dict[str, str] = {}
        for key in ("publicKey", "privateKey", "username"):
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise IdentityError(f"{key} is not a string")
            fields[key] = value
        for key in ("publicKey", "privateKey"):
            if key not in fields:
                raise IdentityError(f"no {key}")
        try:
            keypair = KeyPair.from_exported(fields["publicKey"], fields["privateKey"])
        except RondevuError as error:
            raise IdentityError(str(error)) from None
        name: str | None = fields.get("username", username)
        if name is None:
            raise IdentityError("no username")
        return cls(username=name, keypair=keypair)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, username: str | None = None) -> Identity:
        """Read the key file at ``path`` (``username`` as for `from_dict`).

        Raises `IdentityError` (its text names the file) when the content is not a valid
        identity, and `OSError` (`FileNotFoundError`, `PermissionError`…) when the file
        cannot be read.
        """
        path = Path(path)
        with path.open("rb") as file:
            raw = file.read(_MAX_KEY_FILE_BYTES + 1)
        if len(raw) > _MAX_KEY_FILE_BYTES:
            raise IdentityError(f"key file {path}: larger than {_MAX_KEY_FILE_BYTES} bytes")
        try:
            data: Any = json.loads(raw)
        except ValueError:  # includes invalid UTF-8
            raise IdentityError(f"key file {path}: not JSON") from None
        try:
            return cls.from_dict(data, username=username)
        except IdentityError as error:
            raise IdentityError(f"key file {path}: {error}") from None

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the key file at ``path`` with mode 0600, whole or not at all.

        Raises `FileExistsError` when ``path`` exists and ``overwrite`` is false (two
        processes creating one file at once: exactly one succeeds), and `OSError` when the
        folder is missing or not writable.
        """
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        # mkstemp creates the file with mode 0600 already.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
            os.chmod(temporary, KEY_FILE_MODE)
            if overwrite:
                os.replace(temporary, path)
            else:
                _link_new(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    @classmethod
    def load_or_create(
        cls, path: str | os.PathLike[str], *, username: str | None = None
    ) -> tuple[Identity, bool]:
        """The identity at ``path``, created (`generate` with ``username``) when missing.

        Returns it with True when this call created the file.  A new file always records
        a username, so a restart comes back as the same name.  Errors as for `load`
        and `save`.
        """
        try:
            return cls.load(path, username=username), False
        except FileNotFoundError:
            pass
        identity = cls.generate(username)
        try:
            identity.save(path)
        except FileExistsError:  # another process created it meanwhile: use theirs
            return cls.load(path, username=username), False
        return identity, True


def _link_new(source: str, target: Path) -> None:
    """Give ``source`` the name ``target``, atomically, failing if ``target`` exists."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        # A file system without hard links: an exclusive create is the next best (still
        # never replaces a file, but a crash mid-write could leave a partial one).
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
        with os.fdopen(fd, "wb") as file, open(source, "rb") as copy:
            file.write(copy.read())
