"""``rondevu publish SERVICE`` and ``rondevu connect FQN``: one peer from the terminal.

- ``publish`` keeps ``--max-offers`` offers of ``SERVICE`` published and serves every
  peer that connects: it echoes each message back (default) or, with
  ``--interactive``, prints what peers say and sends each stdin line to all of them.
- ``connect`` connects to a published service and chats: stdin lines go to the peer,
  the peer's messages come out on stdout.

Streams: stdout carries only messages (so both commands work in pipes); status lines
(published, connected, reconnecting...) go to stderr, prefixed ``rondevu:``.

Exit: EOF on stdin (``connect``, ``publish --interactive``), Ctrl-C or SIGTERM close
every connection, the client and its HTTP client, then exit 0.  Bad input (an invalid
FQN or username, a broken key file) exits 2 and an unreachable or refusing server
exits 1, each with one line on stderr and no traceback.

Identity: ``--username`` plus ``--key-file`` keep the same name across runs.  The key
file is JSON ``{"publicKey": ..., "privateKey": ...}`` (base64, the 0.18.9 export shape;
``username`` is added for convenience); it is created with mode 0600 when missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rondevu.client import Rondevu
from rondevu.connection import ConnectionClosedError, ConnectionFailedError, DurableConnection
from rondevu.errors import RondevuError, RpcError, TransportError
from rondevu.rpc_client import wall_clock_ms
from rondevu_core import events as ev
from rondevu_core.buffer import Payload
from rondevu_core.fqn import validate_service_fqn
from rondevu_core.ice import ICE_PRESETS
from rondevu_core.signing import KeyPair
from rondevu_core.usernames import generate_anonymous_username, validate_username

__all__ = ["add_peer_commands", "load_or_create_key_file"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A failure worth one line on stderr and exit ``code``; never a traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# -- arguments -----------------------------------------------------------------------------


def add_peer_commands(commands: Any) -> None:
    """Register ``publish`` and ``connect`` on an argparse sub-parsers object."""
    publish = commands.add_parser(
        "publish",
        help="publish a service and serve every peer that connects",
        description="Publish SERVICE (name:version) and serve every peer that connects: "
        "echo each message back, or with --interactive print what peers say and send "
        "each stdin line to all of them.",
    )
    publish.add_argument("service", metavar="SERVICE", help="name:version, e.g. chat:1.0.0")
    publish.add_argument(
        "--max-offers", type=int, default=3, help="offers kept published at once (default 3)"
    )
    publish.add_argument(
        "--interactive",
        action="store_true",
        help="chat through stdin/stdout instead of echoing",
    )
    _add_common(publish)
    publish.set_defaults(run=_run_publish)

    connect = commands.add_parser(
        "connect",
        help="connect to a published service and chat through stdin/stdout",
        description="Connect to FQN (name:version@user, or name:version for any "
        "provider); stdin lines are sent, received messages are printed.",
    )
    connect.add_argument("fqn", metavar="FQN", help="e.g. chat:1.0.0@alice")
    connect.add_argument(
        "--connect-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the first connection (default 60)",
    )
    _add_common(connect)
    connect.set_defaults(run=_run_connect)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-url",
        default=os.environ.get("RONDEVU_API_URL"),
        help="signaling server base URL (default: $RONDEVU_API_URL)",
    )
    parser.add_argument(
        "--username",
        help="username to claim (default: from the key file, else a fresh anon-... name)",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        help="JSON key pair; created (mode 0600) when missing, so a restart keeps the username",
    )
    parser.add_argument(
        "--ice-servers",
        default="none",
        help=f"'none' (host candidates only) or a preset: {', '.join(sorted(ICE_PRESETS))} "
        "(default none)",
    )
    parser.add_argument(
        "--host-address",
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


# -- identity --------------------------------------------------------------------------------


def load_or_create_key_file(path: Path, username: str | None) -> tuple[KeyPair, str | None]:
    """The key pair (and stored username) in ``path``; a new pair is written if missing.

    A new file always records a username: ``username``, or else a fresh ``anon-…`` name,
    since the server binds the key to the first name it claims and a restart must come
    back as that name.  Raises `CliError` (exit 2) for a file that is not a valid key pair.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        keypair = KeyPair.generate(os.urandom)
        if username is None:
            username = generate_anonymous_username(wall_clock_ms(), os.urandom)
        data: dict[str, str] = {
            "publicKey": keypair.public_key,
            "privateKey": keypair.private_key,
            "username": username,
        }
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as error:
            raise CliError(f"cannot create key file {path}: {error.strerror}", EXIT_USAGE) from None
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
        return keypair, username
    except OSError as error:
        raise CliError(f"cannot read key file {path}: {error.strerror}", EXIT_USAGE) from None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        public, private = data["publicKey"], data["privateKey"]
        if not isinstance(public, str) or not isinstance(private, str):
            raise ValueError("keys must be strings")
        keypair = KeyPair.from_exported(public, private)
        stored = data.get("username")
        if stored is not None and not isinstance(stored, str):
            raise ValueError("username must be a string")
    except KeyError as error:
        raise CliError(f"key file {path} has no {error.args[0]}", EXIT_USAGE) from None
    except (ValueError, RondevuError) as error:
        raise CliError(
            f"key file {path} is not a key pair JSON {{publicKey, privateKey}}: {error}",
            EXIT_USAGE,
        ) from None
    return keypair, stored


def _client(args: argparse.Namespace) -> Rondevu:
    """Build the client from the common options, or raise `CliError` (exit 2)."""
    if not args.api_url:
        raise CliError("--api-url is required (or set RONDEVU_API_URL)", EXIT_USAGE)
    if not args.api_url.startswith(("http://", "https://")):
        raise CliError(f"--api-url must be an http:// or https:// URL: {args.api_url}", EXIT_USAGE)
    username: str | None = args.username
    keypair: KeyPair | None = None
    if args.key_file is not None:
        keypair, stored = load_or_create_key_file(args.key_file, username)
        username = username or stored
    ice: Any = [] if args.ice_servers == "none" else args.ice_servers
    try:
        for address in args.host_addresses or ():
            ipaddress.ip_address(address)  # checked now, not when the first peer appears
        if username is not None:
            validate_username(username)
        return Rondevu.connect(
            args.api_url,
            username=username,
            keypair=keypair,
            ice_servers=ice,
            batching=args.batching == "on",
            host_addresses=args.host_addresses,
        )
    except (RondevuError, ValueError) as error:
        raise CliError(f"invalid option: {error}", EXIT_USAGE) from None


async def _check_server(client: Rondevu, api_url: str) -> None:
    """One signed call, so an unreachable or refusing server fails here, clearly."""
    try:
        await client.api.get_user(client.username)
    except TransportError as error:
        raise CliError(f"cannot reach the signaling server at {api_url}: {error}") from None
    except RpcError as error:
        raise CliError(f"the signaling server refused us: {error}") from None


# -- plumbing shared by both commands --------------------------------------------------------


def status(text: str) -> None:
    """One status line on stderr."""
    print(f"rondevu: {text}", file=sys.stderr, flush=True)


def _show(data: Payload) -> str:
    if isinstance(data, str):
        return data
    return f"<{len(data)} bytes: {data.hex(' ')}>"


def _stdin_lines() -> MemoryObjectReceiveStream[str | None]:
    """stdin's lines (without the newline) as a stream; None marks EOF.

    A daemon thread reads, because stdin may be a terminal, a pipe or a file and only
    a thread reads all three portably; it never keeps the process alive.
    """
    send: MemoryObjectSendStream[str | None]
    send, receive = anyio.create_memory_object_stream[str | None](max_buffer_size=math.inf)
    loop = asyncio.get_running_loop()

    def deliver(line: str | None) -> None:
        # The reader may have gone (the command is exiting): then nobody needs the line.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            send.send_nowait(line)

    def read() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(deliver, line.rstrip("\r\n"))
        except (OSError, ValueError):
            pass
        with contextlib.suppress(RuntimeError):  # the loop closed: we are exiting anyway
            loop.call_soon_threadsafe(deliver, None)

    threading.Thread(target=read, name="rondevu-stdin", daemon=True).start()
    return receive


async def _until_signal(scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` on SIGINT or SIGTERM (the graceful exit)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            status(f"{signal.Signals(signum).name}: closing")
            scope.cancel()
            return


def _narrate(conn: DurableConnection, who: str) -> None:
    """Status lines for the link events a person cares about."""

    def on_event(event: ev.Event) -> None:
        match event:
            case ev.Disconnected(reason=reason):
                status(f"{who}: link lost ({reason})")
            case ev.Failed(error=error):
                status(f"{who}: attempt failed: {error}")
            case ev.ReconnectScheduled(attempt=attempt, delay=delay, max_attempts=most):
                status(f"{who}: reconnecting in {delay} ms (attempt {attempt}/{most})")
            case ev.ReconnectSuccess():
                status(f"{who}: reconnected")
            case ev.ReconnectExhausted(attempts=attempts):
                status(f"{who}: gave up after {attempts} reconnection attempts")
            case ev.MessageBuffered():
                status(f"{who}: not connected, message buffered")
            case _:
                pass

    conn.on("*", on_event)


def _run(main: Callable[[argparse.Namespace], Any], args: argparse.Namespace, name: str) -> int:
    try:
        result: int = anyio.run(main, args)
    except KeyboardInterrupt:
        return EXIT_OK
    except BaseException as error:
        # Task groups wrap what their body raises; a CliError inside is the real story.
        cli_error = _find_cli_error(error)
        if cli_error is None:
            raise
        print(f"rondevu {name}: {cli_error}", file=sys.stderr, flush=True)
        return cli_error.code
    return result


def _find_cli_error(error: BaseException) -> CliError | None:
    if isinstance(error, CliError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _find_cli_error(inner)
            if found is not None:
                return found
    return None


# -- publish ---------------------------------------------------------------------------------


def _run_publish(args: argparse.Namespace) -> int:
    return _run(_publish, args, "publish")


async def _publish(args: argparse.Namespace) -> int:
    try:
        fqn = validate_service_fqn(args.service)
    except RondevuError as error:
        raise CliError(f"invalid SERVICE {args.service!r}: {error}", EXIT_USAGE) from None
    if fqn.username is not None:
        raise CliError("SERVICE is name:version; the username comes from --username", EXIT_USAGE)
    if not 1 <= args.max_offers <= 100:
        raise CliError("--max-offers must be within 1..100", EXIT_USAGE)
    client = _client(args)
    async with client, anyio.create_task_group() as group:
        group.start_soon(_until_signal, group.cancel_scope)
        await _check_server(client, args.api_url)
        client.publish_service(args.service, max_offers=args.max_offers)
        try:
            await client.start_filling()  # returns once the offers are on the server
        except RpcError as error:
            raise CliError(f"publishing failed: {error}") from error
        mode = "interactive" if args.interactive else "echo"
        status(f"published {fqn.with_username(client.username)} ({mode}); waiting for peers")
        peers: list[DurableConnection] = []
        if args.interactive:
            group.start_soon(_broadcast_stdin, peers, group)
        async for conn in client.incoming():
            peers.append(conn)
            group.start_soon(_serve_peer, conn, peers, args.interactive)
    return EXIT_OK


async def _serve_peer(
    conn: DurableConnection, peers: list[DurableConnection], interactive: bool
) -> None:
    who = conn.peer_username or "peer"
    status(f"{who} connected (offer {(conn.offer_id or '?')[:8]})")
    try:
        async for data in conn:
            if interactive:
                print(f"{who}: {_show(data)}", flush=True)
            else:
                print(f"{who}: {_show(data)} (echoed)", flush=True)
                conn.send(data)
    except ConnectionClosedError:
        pass
    finally:
        if conn in peers:
            peers.remove(conn)
    status(f"{who} left")


async def _broadcast_stdin(peers: list[DurableConnection], group: TaskGroup) -> None:
    async with _stdin_lines() as lines:
        async for line in lines:
            if line is None:
                status("stdin closed: closing")
                group.cancel_scope.cancel()
                return
            if not peers:
                status("no peer connected; line dropped")
            for conn in list(peers):
                try:
                    conn.send(line)
                except ConnectionClosedError:
                    peers.remove(conn)


# -- connect ---------------------------------------------------------------------------------


def _run_connect(args: argparse.Namespace) -> int:
    return _run(_connect, args, "connect")


async def _connect(args: argparse.Namespace) -> int:
    try:
        validate_service_fqn(args.fqn)
    except RondevuError as error:
        raise CliError(f"invalid FQN {args.fqn!r}: {error}", EXIT_USAGE) from None
    client = _client(args)
    code = EXIT_OK
    async with client, anyio.create_task_group() as group:
        group.start_soon(_until_signal, group.cancel_scope)
        await _check_server(client, args.api_url)
        status(f"connecting to {args.fqn} as {client.username}")
        conn = await client.connect_to_service(args.fqn)
        _narrate(conn, args.fqn)
        try:
            await conn.wait_connected(args.connect_timeout)
        except TimeoutError:
            raise CliError(
                f"no connection to {args.fqn} within {args.connect_timeout:g} s"
            ) from None
        except (ConnectionFailedError, ConnectionClosedError) as error:
            raise CliError(f"cannot connect to {args.fqn}: {error}") from None
        status(f"connected to {args.fqn}; type lines to send, Ctrl-D to quit")
        group.start_soon(_print_messages, conn, group)
        async with _stdin_lines() as lines:
            async for line in lines:
                if line is None:
                    break
                try:
                    conn.send(line)
                except ConnectionClosedError:
                    code = EXIT_FAILED
                    break
        await conn.close("stdin closed")
        group.cancel_scope.cancel()
    return code


async def _print_messages(conn: DurableConnection, group: TaskGroup) -> None:
    async for data in conn:
        print(_show(data), flush=True)
    status("connection closed")
    group.cancel_scope.cancel()
