"""What every ``rondevu`` command shares: exit codes, the one-line error, the argument
parser, and the checks of option values.

Invariants:
- A bad option value is refused while arguments are parsed, by the option's ``type``
  check, with one line naming the option and the value, and exit 2 (`EXIT_USAGE`);
  argparse's own errors (unknown option, missing argument) are one line too (`Parser`).
- This module is cheap to import: ``rondevu --version`` imports it, so it imports no
  part of the client stack at module level; checks that need the core's rules import
  them when they run, that is only while a command's arguments are parsed.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TextIO

__all__ = [
    "API_URL_ENV",
    "DEFAULT_API_URL",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "Parser",
    "add_api_url_option",
    "add_client_options",
    "api_url",
    "count",
    "host_address",
    "ice_servers",
    "resolve_api_url",
    "seconds",
    "server_failure",
    "service_fqn",
    "service_name",
    "show_sender",
    "status",
    "username",
]

EXIT_OK = 0
"""Done: stdin ended, the run finished, or SIGTERM asked for a graceful stop."""
EXIT_FAILED = 1
"""Something outside the command failed: the server, the network, the peer."""
EXIT_USAGE = 2
"""Bad input: an option value, a key file."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT), at any moment, in every command: the shell's 128 + signal 2."""

DEFAULT_API_URL = "http://127.0.0.1:3000"
"""Where ``rondevu serve`` listens by default."""
API_URL_ENV = "RONDEVU_API_URL"


class CliError(Exception):
    """A failure worth one line on stderr and exit ``code``; never a traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``rondevu connect: argument …: … (see … --help)``.

    Sub-commands inherit the class (argparse builds them with ``type(parent)``).
    """

    commands: Mapping[str, argparse.ArgumentParser]
    """The sub-command parsers by name (set by whoever adds the sub-commands)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = {}

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def server_failure(error: Exception, api_url: str) -> CliError:
    """The one line for a signaling call that failed: unreachable, not a Rondevu server,
    or refused (the server's own text)."""
    from rondevu.errors import ProtocolError, RpcError, TransportError

    if isinstance(error, TransportError):
        return CliError(f"cannot reach the signaling server at {api_url}: {error}")
    if isinstance(error, ProtocolError):
        return CliError(f"{api_url} does not answer like a Rondevu signaling server")
    if isinstance(error, RpcError):
        return CliError(f"the signaling server at {api_url} refused the call: {error}")
    return CliError(f"the signaling server at {api_url}: {error}")


def status(text: str) -> None:
    """One status line on stderr (stdout carries only messages)."""
    print(f"rondevu: {text}", file=sys.stderr, flush=True)


# -- value checks (argparse ``type=`` functions) ----------------------------------------


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def count(low: int, high: int) -> Callable[[str], int]:
    """A check for a whole number within ``low..high``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number in {low}..{high}")
        return value

    return check


def api_url(text: str) -> str:
    """An ``http://`` or ``https://`` base URL with a host and a valid port."""
    problem = _api_url_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text


def _api_url_problem(text: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port  # raises for a port out of range or not a number
    except ValueError:
        return "has an invalid port (1..65535)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http:// or https:// URL with a host"
    if port == 0:
        return "has an invalid port (1..65535)"
    if parts.query or parts.fragment or any(ch.isspace() for ch in text):
        return "is not a base URL (no query, fragment or spaces)"
    return None


def resolve_api_url(given: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """``--api-url``, else ``$RONDEVU_API_URL``, else `DEFAULT_API_URL`; raises `CliError`
    (exit 2) for a bad environment value, naming the variable."""
    if given is not None:
        return given
    from_env = environ.get(API_URL_ENV)
    if not from_env:
        return DEFAULT_API_URL
    problem = _api_url_problem(from_env)
    if problem is not None:
        raise CliError(f"{API_URL_ENV}: {from_env!r} {problem}", EXIT_USAGE)
    return from_env


def host_address(text: str) -> str:
    """An IPv4 or IPv6 address (not a host name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None
    return text


def username(text: str) -> str:
    """A valid username (the server's rule)."""
    from rondevu_core.errors import RondevuError
    from rondevu_core.rules.usernames import validate_username

    try:
        return validate_username(text)
    except RondevuError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def service_name(text: str) -> str:
    """``name:version`` with no username (what ``publish`` publishes)."""
    fqn = service_fqn(text)
    if "@" in fqn:
        raise argparse.ArgumentTypeError(
            f"{text!r} names a user: give name:version; the username comes from "
            "--username or the key file"
        )
    return fqn


def service_fqn(text: str) -> str:
    """``name:version`` or ``name:version@user``, with no empty part."""
    from rondevu_core.errors import RondevuError
    from rondevu_core.rules.fqn import validate_service_fqn

    try:
        fqn = validate_service_fqn(text)
    except RondevuError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    # The server reads "chat:1.0.0@" as "no username": almost surely a typo here.
    if text.endswith("@") or ("@" in text and not fqn.username):
        raise argparse.ArgumentTypeError(f"{text!r}: the username after '@' is empty")
    return text


_MAX_ICE_FILE_BYTES = 64 * 1024
"""Far above any real server list: a bigger file is surely the wrong file."""


def ice_servers(text: str) -> Any:
    """``none``, the name of an ICE preset, or a JSON file of STUN/TURN servers.

    The file holds what a TURN credential service hands out: a list of ``RTCIceServer``
    objects (``urls``, ``username``, ``credential``), or an ``RTCConfiguration``-shaped
    object with ``iceServers`` and an optional ``iceTransportPolicy`` (``all`` or
    ``relay``).  It is read and checked now, so a bad file is one line at start-up.
    Returns the value for ``Rondevu.connect(ice_servers=...)``.
    """
    from rondevu_core.rules.ice import ICE_PRESETS

    if text == "none":
        return []
    if text in ICE_PRESETS:
        return text
    path = Path(text)
    if not (text.endswith(".json") or path.is_file()):
        choices = ", ".join(["none", *sorted(ICE_PRESETS)])
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {choices}, nor a .json file")
    try:
        with path.open("rb") as file:
            raw = file.read(_MAX_ICE_FILE_BYTES + 1)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error.strerror or error}") from None
    if len(raw) > _MAX_ICE_FILE_BYTES:
        raise argparse.ArgumentTypeError(f"{text!r}: larger than {_MAX_ICE_FILE_BYTES} bytes")
    return _ice_file(text, raw)


def _ice_file(text: str, raw: bytes) -> Any:
    import json

    from rondevu_core.rules.ice import IceTransportPolicy, ice_configuration

    try:
        data = json.loads(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not valid JSON") from None
    policy = None
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"iceServers", "iceTransportPolicy"})
        if unknown:
            raise argparse.ArgumentTypeError(f"{text!r}: unknown keys {', '.join(unknown)}")
        raw_policy = data.get("iceTransportPolicy", "all")
        if raw_policy not in ("all", "relay"):
            raise argparse.ArgumentTypeError(
                f"{text!r}: iceTransportPolicy must be 'all' or 'relay'"
            )
        policy = IceTransportPolicy(raw_policy)
        data = data.get("iceServers")
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a list of ICE servers, or an object with iceServers"
        )
    try:
        return ice_configuration(data, transport_policy=policy)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def show_sender(choice: str, stream: TextIO) -> bool:
    """Whether received lines get a ``sender: `` mark: ``auto`` marks on a terminal only,
    so pipes and files keep the raw messages."""
    if choice == "auto":
        try:
            return stream.isatty()
        except ValueError:  # a closed stream
            return False
    return choice == "always"


# -- options shared by the peer commands --------------------------------------------------


def add_api_url_option(parser: argparse.ArgumentParser) -> None:
    """``--api-url`` (resolved later by `resolve_api_url`)."""
    parser.add_argument(
        "--api-url",
        type=api_url,
        metavar="URL",
        help=f"signaling server base URL (default: ${API_URL_ENV}, else {DEFAULT_API_URL}, "
        "where 'rondevu serve' listens)",
    )


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that runs a client (``publish``, ``connect``)."""
    from rondevu_core.rules.ice import ICE_PRESETS

    add_api_url_option(parser)
    parser.add_argument(
        "--username",
        type=username,
        help="username to claim (default: the key file's, else a fresh anon-... name)",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        metavar="PATH",
        help="identity file (see 'rondevu keygen'); created (mode 0600) when missing, so a "
        "restart keeps the username",
    )
    parser.add_argument(
        "--ice-servers",
        type=ice_servers,
        default="none",
        metavar="NAME|FILE",
        help="'none' (host candidates only, the default), a preset "
        f"({', '.join(sorted(ICE_PRESETS))}), or a JSON file of STUN/TURN servers: a list "
        'of {"urls", "username", "credential"} objects, or {"iceServers": [...], '
        '"iceTransportPolicy": "relay"}',
    )
    parser.add_argument(
        "--host-address",
        type=host_address,
        action="append",
        dest="host_addresses",
        metavar="IP",
        help="gather host candidates on this address only (repeatable), e.g. 127.0.0.1",
    )
    parser.add_argument(
        "--batching",
        choices=("on", "off"),
        default="on",
        help="batch signaling calls into one HTTP request (default on)",
    )
    parser.add_argument(
        "--show-sender",
        choices=("auto", "always", "never"),
        default="auto",
        help="prefix received lines with 'sender: ' (default auto: only on a terminal)",
    )
