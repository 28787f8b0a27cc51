"""``rondevu publish SERVICE`` and ``rondevu connect FQN``: one peer from the terminal.

- ``publish`` keeps ``--max-offers`` offers of ``SERVICE`` published and serves every
  peer that connects: it echoes each message back (default) or, with
  ``--interactive``, prints what peers say and sends each stdin line to all of them.
- ``connect`` connects to a published service and chats: stdin lines go to the peer,
  the peer's messages come out on stdout.

Streams: stdout carries only received messages, one per line, marked with the sender
(``alice: hello``) when stdout is a terminal and raw otherwise, so both commands work
in pipes (``--show-sender`` overrides).  Status lines (published, connected,
reconnecting...) go to stderr, prefixed ``rondevu:``.

Endings (exit codes are `rondevu.cli_options`'s): EOF on stdin (``connect``, ``publish
--interactive``) or SIGTERM close every connection, the client and its HTTP client, then
exit 0; Ctrl-C does the same and exits 130 (a second Ctrl-C quits at once).  A
``connect`` whose connection gives up (``--reconnect-attempts`` used up) or never comes
(``--connect-timeout``) exits 1, as does an unreachable or refusing server, with one
line and nothing left waiting for stdin.  Bad input exits 2 before any network I/O.

Identity: ``--key-file`` holds the username and key pair (`rondevu.identity`), created
when missing, so a restart comes back as the same name.

Reconnection: ``connect`` retries without a limit by default, backing off up to 30 s
between attempts; while such a wait runs it looks the service up every
`RECONNECT_PROBE_MS` (a lone getService), so a publisher that comes back after a long
outage is reached within about a second, not at the end of the wait.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rondevu.cli import summary
from rondevu.cli_options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_client_options,
    count,
    resolve_api_url,
    seconds,
    server_failure,
    service_fqn,
    service_name,
    show_sender,
    status,
)
from rondevu.client import Rondevu
from rondevu.connection import ConnectionClosedError, ConnectionFailedError, DurableConnection
from rondevu.errors import RondevuError, RpcError
from rondevu.identity import Identity, IdentityError
from rondevu_core import events as ev
from rondevu_core.buffer import Payload
from rondevu_core.delivery import WindowFullError
from rondevu_core.rpc import Method
from rondevu_core.rules.signing import KeyPair

__all__ = ["add_connect_command", "add_publish_command"]

_STDIN_QUEUE = 64
"""Lines read ahead of the sender: beyond it the reader waits (a big file on stdin must
not be read into memory faster than it is sent)."""
_UNREACHABLE_EVERY_S = 30.0
"""A publisher reports an unreachable server at most this often (it looks every second)."""
_MAX_LINE_CHARS = 256 * 1024
"""A longer line is sent in pieces of this size (a data channel message has a limit)."""
_CLOSE_ACK_WAIT = 2.0
"""Seconds `connect` waits at stdin's end for the peer to confirm the last lines."""


RECONNECT_PROBE_MS = 500
"""How often ``connect`` looks for its service while a reconnection waits out a long
backoff (`ConnectionConfig.reconnect_probe_interval_ms`; the library's default is off).
bench/bench_outage.py: 0.64 s from the publisher's return to the first message, against
7.9 s without the probe, with the backoff at an 8 s cap."""


# -- arguments -----------------------------------------------------------------------------


def add_publish_command(commands: Any) -> None:
    """Register ``publish`` on an argparse sub-parsers object."""
    publish = commands.add_parser(
        "publish",
        help=summary("publish"),
        description="Publish SERVICE (name:version) and serve every peer that connects: "
        "echo each message back, or with --interactive print what peers say and send "
        "each stdin line to all of them.  Received messages go to stdout, status to "
        "stderr.  Stops on SIGTERM (exit 0), Ctrl-C (exit 130) or, with --interactive, "
        "the end of stdin (exit 0).",
    )
    publish.add_argument(
        "service", metavar="SERVICE", type=service_name, help="name:version, e.g. chat:1.0.0"
    )
    publish.add_argument(
        "--max-offers",
        type=count(1, 100),
        default=3,
        metavar="N",
        help="offers kept published at once, 1..100 (default 3)",
    )
    publish.add_argument(
        "--interactive",
        action="store_true",
        help="chat through stdin/stdout instead of echoing",
    )
    add_client_options(publish)
    publish.set_defaults(run=_run_publish)


def add_connect_command(commands: Any) -> None:
    """Register ``connect`` on an argparse sub-parsers object."""
    connect = commands.add_parser(
        "connect",
        help=summary("connect"),
        description="Connect to FQN (name:version@user, or name:version for any "
        "provider); stdin lines are sent, received messages are printed.  Ends with "
        "stdin (exit 0), on SIGTERM (exit 0), Ctrl-C (exit 130), or when the connection "
        "cannot be made or is lost for good (exit 1).",
    )
    connect.add_argument("fqn", metavar="FQN", type=service_fqn, help="e.g. chat:1.0.0@alice")
    connect.add_argument(
        "--connect-timeout",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="seconds to wait for the first connection (default 60)",
    )
    connect.add_argument(
        "--reconnect-attempts",
        type=count(0, 1_000_000),
        default=0,
        metavar="N",
        help="reconnection attempts after the link is lost before giving up (default 0: "
        "keep trying; the publisher may come back)",
    )
    add_client_options(connect)
    connect.set_defaults(run=_run_connect)


# -- identity and client ---------------------------------------------------------------------


def _identity(args: argparse.Namespace) -> tuple[str | None, KeyPair | None]:
    """The username and key pair to use: the key file's (created when missing), else
    ``--username`` with a fresh key.  Raises `CliError` (exit 2) for an unusable file."""
    path: Path | None = args.key_file
    if path is None:
        return args.username, None
    try:
        identity, created = Identity.load_or_create(path, username=args.username)
    except IdentityError as error:
        raise CliError(str(error), EXIT_USAGE) from None
    except OSError as error:
        raise CliError(f"key file {path}: {error.strerror or error}", EXIT_USAGE) from None
    if args.username is not None and identity.username != args.username:
        raise CliError(
            f"--username {args.username!r} differs from {identity.username!r} in key file "
            f"{path} (the server binds a name to one key)",
            EXIT_USAGE,
        )
    if created:
        status(f"created key file {path} for {identity.username}")
    return identity.username, identity.keypair


def _client(args: argparse.Namespace) -> Rondevu:
    """The client of the common options (validated by the parser already)."""
    args.api_url = resolve_api_url(args.api_url)
    username, keypair = _identity(args)
    ice: Any = args.ice_servers  # already resolved by the option's check
    return Rondevu.connect(
        args.api_url,
        username=username,
        keypair=keypair,
        ice_servers=ice,
        batching=args.batching == "on",
        host_addresses=args.host_addresses,
    )


async def _check_server(client: Rondevu, api_url: str) -> None:
    """One call before anything else, so a wrong URL, a server that is down or a name
    held by another key fails here, with one clear line."""
    try:
        user = await client.api.get_user(client.username)
    except RondevuError as error:
        raise server_failure(error, api_url) from None
    if not user.available and user.public_key != client.public_key:
        raise CliError(
            f"username {client.username!r} is taken by another key on {api_url} "
            "(pick another name, or use the key file that claimed it)"
        )


# -- plumbing shared by both commands --------------------------------------------------------


class _Stop:
    """How a `_stoppable` block was asked to end, which decides the exit code."""

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.signal: signal.Signals | None = None

    def exit_code(self, code: int = EXIT_OK) -> int:
        """``code``, unless Ctrl-C ended the run (130)."""
        return EXIT_INTERRUPTED if self.signal is signal.SIGINT else code


@contextlib.asynccontextmanager
async def _stoppable() -> AsyncIterator[_Stop]:
    """A block that SIGINT or SIGTERM ends gracefully: its scope is cancelled, so the
    ``async with`` blocks inside close everything.  A second signal, during that
    cleanup, quits at once.

    Enter the client *before* this block (``async with client, _stoppable()``): the
    cancellation then reaches only the work inside, and the client closes with its
    tasks alive, so a publisher's withdrawal of its offers still reaches the server."""
    stop = _Stop()
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_watch_signals, stop)
            try:
                with stop.scope:
                    yield stop
            finally:
                group.cancel_scope.cancel()
    finally:
        if stop.signal is not None:
            # The watcher is gone and SIGINT is Python's KeyboardInterrupt again, which
            # would turn a second Ctrl-C during the event loop's own shutdown into a
            # traceback.  Nothing graceful is left to do: a second signal quits.
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError):  # not the main thread
                    signal.signal(signum, _quit_at_once)


def _quit_at_once(signum: int, _frame: object) -> None:
    sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)


async def _watch_signals(stop: _Stop) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if stop.signal is None:
                stop.signal = signal.Signals(signum)
                status(f"{stop.signal.name}: closing (again to quit at once)")
                stop.scope.cancel()
            else:
                status(f"{signal.Signals(signum).name}: quitting without closing")
                sys.stdout.flush()
                os._exit(EXIT_INTERRUPTED)


def _text(data: Payload) -> str:
    if isinstance(data, str):
        return data
    return f"<{len(data)} bytes: {data.hex(' ')}>"


def _print_received(who: str, data: Payload, mark: bool) -> None:
    print(f"{who}: {_text(data)}" if mark else _text(data), flush=True)


def _stdin_lines() -> MemoryObjectReceiveStream[str | None]:
    """stdin's lines (without the newline) as a stream; None marks the end.

    A daemon thread reads, because stdin may be a terminal, a pipe or a file and only a
    thread reads all three portably.  It reads the file descriptor itself, never
    ``sys.stdin``: a daemon thread blocked inside a buffered reader would make the
    interpreter's exit fail on that reader's lock, and this thread may well be blocked
    when the command ends (the connection gave up, Ctrl-C).
    """
    send: MemoryObjectSendStream[str | None]
    send, receive = anyio.create_memory_object_stream[str | None](max_buffer_size=_STDIN_QUEUE)
    loop = asyncio.get_running_loop()

    def deliver(line: str | None) -> bool:
        sending = send.send(line)
        try:
            future = asyncio.run_coroutine_threadsafe(sending, loop)
        except RuntimeError:  # the loop is closed: the command has ended
            sending.close()  # never scheduled: no "never awaited" warning
            return False
        try:
            future.result()  # waits while the queue is full
        except Exception:  # the reader left, or the loop cancelled the send on its way out
            return False
        return True

    def read() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1
        while fd >= 0:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += decoder.decode(chunk)
            *lines, pending = pending.split("\n")
            while len(pending) > _MAX_LINE_CHARS:
                lines.append(pending[:_MAX_LINE_CHARS])
                pending = pending[_MAX_LINE_CHARS:]
            for line in lines:
                if not deliver(line.removesuffix("\r")):
                    return
        pending += decoder.decode(b"", final=True)
        if pending and not deliver(pending.removesuffix("\r")):
            return
        deliver(None)

    threading.Thread(target=read, name="rondevu-stdin", daemon=True).start()
    return receive


def _narrate(conn: DurableConnection, who: str) -> list[str]:
    """Status lines for the link events a person cares about; returns a list that holds
    the latest failed attempt's error (for the line that ends the command)."""
    last_error: list[str] = []

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.Failed):
            last_error[:] = [event.error]
        match event:
            case ev.Disconnected(reason=reason):
                status(f"{who}: link lost ({reason})")
            case ev.Failed(error=error):
                status(f"{who}: attempt failed: {error}")
            case ev.ReconnectScheduled(attempt=attempt, delay=delay, max_attempts=most):
                of = f"/{most}" if most else ""
                status(f"{who}: reconnecting in {delay} ms (attempt {attempt}{of})")
            case ev.ReconnectSuccess():
                status(f"{who}: reconnected")
            case ev.ReconnectExhausted(attempts=attempts):
                status(f"{who}: gave up after {attempts} reconnection attempts")
            case ev.MessageBuffered():
                status(f"{who}: not connected, message buffered")
            case ev.MessageBufferOverflow(data=data):
                status(f"{who}: buffer full, oldest message dropped: {_text(data)}")
            case ev.MessageBufferExpired(data=data):
                status(f"{who}: buffered too long, message dropped: {_text(data)}")
            case ev.MessagesUndelivered(messages=messages, reason=reason, maybe_delivered=maybe):
                what = "not confirmed" if maybe else "not delivered"
                status(f"{who}: {len(messages)} message(s) {what} ({reason})")
                for data in messages:
                    status(f"{who}:   {what}: {_text(data)}")
            case ev.SessionReset(unacked=unacked, resent=resent, reason=reason):
                then = "sending them again" if resent else "dropped"
                status(f"{who}: new session ({reason}); {len(unacked)} unconfirmed, {then}")
            case _:
                pass

    conn.on("*", on_event)
    return last_error


# -- publish ---------------------------------------------------------------------------------


def _run_publish(args: argparse.Namespace) -> int:
    code: int = anyio.run(_publish, args)
    return code


async def _publish(args: argparse.Namespace) -> int:
    client = _client(args)
    mark = show_sender(args.show_sender, sys.stdout)
    async with client, _stoppable() as stop:
        await _check_server(client, args.api_url)
        client.publish_service(args.service, max_offers=args.max_offers)
        try:
            await client.start_filling()  # returns once the offers are on the server
        except RpcError as error:
            raise CliError(f"publishing failed: {error}") from None
        except RondevuError as error:
            raise server_failure(error, args.api_url) from None
        mode = "interactive" if args.interactive else "echo"
        status(f"published {args.service}@{client.username} ({mode}); waiting for peers")
        refused = _narrate_pool(client, f"{args.service}@{client.username}")
        peers: list[DurableConnection] = []
        async with anyio.create_task_group() as group:
            group.start_soon(_fail_when_refused, client, refused)
            if args.interactive:
                group.start_soon(_broadcast_stdin, peers, group.cancel_scope)
            async for conn in client.incoming():
                peers.append(conn)
                group.start_soon(_serve_peer, conn, peers, args.interactive, mark)
    return stop.exit_code()


def _narrate_pool(client: Rondevu, fqn: str) -> MemoryObjectReceiveStream[str]:
    """Status lines for what the pool does by itself; returns where a permanent refusal
    of its publication (the pool has stopped) arrives."""
    send, receive = anyio.create_memory_object_stream[str](max_buffer_size=1)

    def republished(event: ev.ServiceRepublished) -> None:
        status(f"republished {fqn}: {event.reason}")

    reported: list[float] = []  # when unreachability was last reported: not every look

    def publish_failed(event: ev.PublishFailed) -> None:
        status(f"publishing {fqn} failed: {event.error}")

    def signaling_error(event: ev.SignalingError) -> None:
        now = time.monotonic()
        if not reported or now - reported[0] >= _UNREACHABLE_EVERY_S:
            reported[:] = [now]
            status(f"signaling server unreachable ({event.error}); still trying")

    def permanent(event: ev.PermanentError) -> None:
        with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError):
            send.send_nowait(event.error)

    client.on("service:republished", republished)
    client.on("offers:publish:failed", publish_failed)
    client.on("signaling:error", signaling_error)
    client.on("error:permanent", permanent)
    return receive


async def _fail_when_refused(client: Rondevu, refused: MemoryObjectReceiveStream[str]) -> None:
    """Raise `CliError` once the server refuses the publication for good."""
    async with refused:
        async for message in refused:
            error = await client.explain_refusal(Method.PUBLISH_SERVICE, message)
            raise CliError(f"publishing stopped for good: {error}", EXIT_FAILED)


async def _serve_peer(
    conn: DurableConnection, peers: list[DurableConnection], interactive: bool, mark: bool
) -> None:
    who = conn.peer_username or "peer"
    status(f"{who} connected (offer {(conn.offer_id or '?')[:8]})")
    _narrate(conn, who)
    try:
        async for data in conn:
            _print_received(who, data, mark)
            if not interactive:
                # Waits while the window is full: the echo slows the peer down rather
                # than failing (flow control, docs/session-layer.md).
                await conn.send_wait(data)
    except (ConnectionClosedError, ConnectionFailedError):
        pass
    finally:
        if conn in peers:
            peers.remove(conn)
    status(f"{who} left")


async def _broadcast_stdin(peers: list[DurableConnection], scope: anyio.CancelScope) -> None:
    async with _stdin_lines() as lines:
        async for line in lines:
            if line is None:
                status("stdin closed: closing")
                scope.cancel()
                return
            if not peers:
                status("no peer connected; line dropped")
            for conn in list(peers):
                try:
                    conn.send(line)
                except WindowFullError as error:
                    status(f"line not sent: {error}")
                except RondevuError:  # closed or given up meanwhile: that peer has left
                    peers.remove(conn)


# -- connect ---------------------------------------------------------------------------------


def _run_connect(args: argparse.Namespace) -> int:
    code: int = anyio.run(_connect, args)
    return code


async def _connect(args: argparse.Namespace) -> int:
    client = _client(args)
    mark = show_sender(args.show_sender, sys.stdout)
    fqn: str = args.fqn
    code = EXIT_OK
    async with client, _stoppable() as stop:
        await _check_server(client, args.api_url)
        status(f"connecting to {fqn} as {client.username}")
        config = dataclasses.replace(
            client.connection_config,
            max_reconnect_attempts=args.reconnect_attempts,
            reconnect_probe_interval_ms=RECONNECT_PROBE_MS,
        )
        conn = await client.connect_to_service(fqn, connection_config=config)
        last_error = _narrate(conn, fqn)
        try:
            await conn.wait_connected(args.connect_timeout)
        except TimeoutError:
            last = f" (last attempt: {last_error[0]})" if last_error else ""
            raise CliError(
                f"no connection to {fqn} within {args.connect_timeout:g} s{last}"
            ) from None
        except (ConnectionFailedError, ConnectionClosedError) as error:
            raise CliError(f"cannot connect to {fqn}: {error}") from None
        status(f"connected to {fqn}; type lines to send, Ctrl-D to quit")
        who = conn.peer_username or (fqn.rpartition("@")[2] if "@" in fqn else "peer")
        code = await _chat(conn, fqn, who, mark)
    return stop.exit_code(code)


async def _chat(conn: DurableConnection, fqn: str, who: str, mark: bool) -> int:
    """Send stdin's lines and print what arrives until stdin ends (0), or raise
    `CliError` once the connection is lost for good."""
    async with anyio.create_task_group() as group:
        group.start_soon(_print_messages, conn, who, mark)
        group.start_soon(_fail_when_given_up, conn, fqn)
        async with _stdin_lines() as lines:
            async for line in lines:
                if line is None:
                    break
                try:
                    # Waits while the session window is full, so stdin is read only as
                    # fast as the peer confirms (a pipe of any size loses nothing).
                    await conn.send_wait(line)
                except (ConnectionFailedError, ConnectionClosedError) as error:
                    raise CliError(f"lost {fqn} for good: {error}") from None
        with anyio.move_on_after(_CLOSE_ACK_WAIT):
            await conn.wait_acked()  # so the last lines are confirmed, not reported
        await conn.close("stdin closed")
        group.cancel_scope.cancel()
    return EXIT_OK


async def _print_messages(conn: DurableConnection, who: str, mark: bool) -> None:
    async for data in conn:
        _print_received(who, data, mark)


async def _fail_when_given_up(conn: DurableConnection, fqn: str) -> None:
    """Raise `CliError` once ``conn`` gives up reconnecting; return if it closes."""
    while True:
        # Listening starts before the state is read, so no change in between is missed.
        events = conn.events()
        try:
            try:
                await conn.wait_connected()
            except ConnectionFailedError as error:
                raise CliError(f"lost {fqn} for good: {error}", EXIT_FAILED) from None
            except ConnectionClosedError:
                return
            async for _event in events:
                if not conn.is_connected:
                    break  # the link went down: wait for it to come back, or give up
            else:
                return  # the event stream ends when the connection closes
        finally:
            await _aclose(events)


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)  # async generators have it
    if aclose is not None:
        await aclose()
