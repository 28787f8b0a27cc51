"""``rondevu keygen FILE`` and ``rondevu whoami FILE``: create and show an identity file.

The file is `rondevu.identity`'s key file (username + key pair, mode 0600), the one
``--key-file`` of ``publish`` and ``connect`` reads and ``Identity.load`` loads.

- ``keygen`` creates it (``--username``, else a fresh ``anon-…`` name) and never replaces
  an existing file unless ``--force``; it prints what ``whoami`` prints.
- ``whoami`` prints the username and the public key (never the private key); with
  ``--check`` it also asks the signaling server whether the name is free, held by this
  key, or held by another key (then exit 1: this file cannot use that name there).

Output goes to stdout as ``field: value`` lines; errors are one line on stderr (exit 2
for a bad or missing file, 1 for a server that cannot be reached).
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any

from rondevu.cli import summary
from rondevu.cli_options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_api_url_option,
    resolve_api_url,
    server_failure,
    username,
)
from rondevu.identity import Identity, IdentityError

__all__ = ["add_keygen_command", "add_whoami_command"]


def add_keygen_command(commands: Any) -> None:
    """Register ``keygen`` on an argparse sub-parsers object."""
    parser = commands.add_parser(
        "keygen",
        help=summary("keygen"),
        description="Create FILE holding a username and a new Ed25519 key pair (JSON "
        "{username, publicKey, privateKey}, mode 0600), for --key-file of publish and "
        "connect, or Identity.load() in Python.  The server binds the name to this key "
        "on first use: keep the file to keep the name.",
    )
    parser.add_argument("file", metavar="FILE", type=Path, help="where to write the identity")
    parser.add_argument(
        "--username",
        type=username,
        help="the name to hold (default: a fresh anon-... name)",
    )
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    parser.set_defaults(run=_run_keygen)


def add_whoami_command(commands: Any) -> None:
    """Register ``whoami`` on an argparse sub-parsers object."""
    parser = commands.add_parser(
        "whoami",
        help=summary("whoami"),
        description="Show the username and public key of identity FILE (never its "
        "private key).  With --check, also ask the signaling server who holds the name.",
    )
    parser.add_argument("file", metavar="FILE", type=Path, help="an identity file")
    parser.add_argument(
        "--check",
        action="store_true",
        help="ask the server whether the name is free, held by this key or by another",
    )
    add_api_url_option(parser)
    parser.set_defaults(run=_run_whoami)


def _show(identity: Identity, path: Path) -> None:
    print(f"file: {path}")
    print(f"username: {identity.username}")
    print(f"public key: {identity.public_key}")


def _run_keygen(args: argparse.Namespace) -> int:
    identity = Identity.generate(args.username)
    try:
        identity.save(args.file, overwrite=args.force)
    except FileExistsError:
        raise CliError(
            f"{args.file} exists; not replacing it (--force replaces it, and its name's "
            "key with it)",
            EXIT_USAGE,
        ) from None
    except OSError as error:
        raise CliError(f"cannot write {args.file}: {error.strerror or error}", EXIT_USAGE) from None
    _show(identity, args.file)
    return EXIT_OK


def _load(path: Path) -> Identity:
    try:
        return Identity.load(path)
    except IdentityError as error:
        raise CliError(str(error), EXIT_USAGE) from None
    except OSError as error:
        raise CliError(f"key file {path}: {error.strerror or error}", EXIT_USAGE) from None


def _run_whoami(args: argparse.Namespace) -> int:
    identity = _load(args.file)
    if not args.check:
        _show(identity, args.file)
        return EXIT_OK
    url = resolve_api_url(args.api_url)
    import anyio

    held_by_us, text = anyio.run(_ask_server, identity, url)
    _show(identity, args.file)
    print(f"server: {url}: {text}")
    return EXIT_OK if held_by_us is not False else EXIT_FAILED


async def _ask_server(identity: Identity, url: str) -> tuple[bool | None, str]:
    """(True: held by this key / None: free / False: held by another key, the text)."""
    from rondevu.api import RondevuAPI
    from rondevu.errors import RondevuError

    # Raised after the block: inside it, the client's task group would wrap it.
    failure: CliError | None = None
    async with RondevuAPI.http(url, username=identity.username, keypair=identity.keypair) as api:
        try:
            user = await api.get_user(identity.username)
        except RondevuError as error:
            failure = server_failure(error, url)
    if failure is not None:
        raise failure
    if user.available:
        return None, "name is free (the first publish or connect with this file claims it)"
    until = _utc(user.expires_at)
    if user.public_key == identity.public_key:
        return True, f"name held by this key until {until}"
    return False, f"name held by ANOTHER key until {until}: this file cannot use it there"


def _utc(ms: int | None) -> str:
    if ms is None:
        return "?"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
