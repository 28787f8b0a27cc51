"""``rondevu demo``: an embedded signaling server and two peers, one printed timeline.

What it shows, in order: our signaling server serving real HTTP on 127.0.0.1 (a free
port, SQLite ``:memory:``); alice publishing ``chat:1.0.0``; bob connecting to it;
messages both ways (text and binary); the link cut from alice's side (her raw aiortc peer
connection is closed behind the machines' back, as a crash or a dead network would);
bob noticing, scheduling a reconnection and buffering what he sends meanwhile; bob
reconnecting to a fresh offer of the same user (with the session layer, alice keeps the
same connection and the session resumes); the buffered messages replayed and received
by alice; then a clean shutdown.

Output: the timeline and the final ``rondevu demo: OK in … ms`` go to stdout; a failure
is one line on stderr, ``rondevu demo: FAILED while <step>: …``, exit 1; Ctrl-C prints
``rondevu demo: interrupted`` and exits 130, as every ``rondevu`` command does.

Invariants: everything stays on loopback (HTTP on 127.0.0.1, no STUN/TURN servers, host
candidates restricted to 127.0.0.1); the whole run is bounded by ``--timeout``; on any
failure it prints one line naming the step that failed and exits 1; nothing is left
running when it returns (every client, peer connection and the server are closed by
their ``async with`` blocks, in reverse order of creation).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TextIO

import anyio
import httpx
import uvicorn

from rondevu.cli import summary
from rondevu.cli_options import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, seconds
from rondevu.client import Rondevu
from rondevu.connection import DurableConnection
from rondevu.errors import RondevuError
from rondevu_core import events as ev
from rondevu_core.buffer import Payload
from rondevu_core.config import ConnectionConfig
from rondevu_server.asgi import RondevuApp
from rondevu_server.config import ServerConfig
from rondevu_server.server import RondevuServer

__all__ = ["add_demo_command", "embedded_server", "run_demo"]

SERVICE = "chat:1.0.0"
LOOPBACK = "127.0.0.1"
DEFAULT_TIMEOUT = 30.0

# Faster than 0.18.9's 1 s first backoff so the demo stays short; everything else default.
_DEMO_CONNECTION = ConnectionConfig(reconnect_backoff_base_ms=300, reconnect_jitter=0.0)


def add_demo_command(commands: Any) -> None:
    """Register ``demo`` on an argparse sub-parsers object."""
    parser = commands.add_parser(
        "demo",
        help=summary("demo"),
        description="Start a signaling server on 127.0.0.1 and two peers, alice and bob; "
        "connect them, exchange messages, cut the link, reconnect and replay what bob "
        "sent while it was down, printing a timeline in ms since start.  Needs no network "
        "beyond loopback.",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", action="store_true", help="print only the result line")
    verbosity.add_argument(
        "--verbose", action="store_true", help="also print every state change of bob's link"
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this many seconds (default {DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    return run_demo(quiet=args.quiet, verbose=args.verbose, timeout=args.timeout)


class Timeline:
    """Prints ``<ms since start>  <who>  <what>`` lines and remembers the current step."""

    def __init__(self, out: TextIO, *, quiet: bool = False) -> None:
        self._out = out
        self._quiet = quiet
        self._start = time.monotonic()
        self.step = "starting"

    def ms(self) -> int:
        """Milliseconds since the demo started."""
        return round((time.monotonic() - self._start) * 1000)

    def say(self, who: str, text: str) -> None:
        """One timeline line (suppressed by ``--quiet``)."""
        if not self._quiet:
            print(f"{self.ms():>6} ms  {who:<6} {text}", file=self._out, flush=True)

    def result(self, text: str) -> None:
        """The final line, printed even with ``--quiet``."""
        print(text, file=self._out, flush=True)


def run_demo(
    *,
    quiet: bool = False,
    verbose: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the demo: 0 when every step happened; 1 with one line on ``err`` (stderr)
    naming the step that failed; 130 when interrupted."""
    timeline = Timeline(out or sys.stdout, quiet=quiet)
    errors = err or sys.stderr

    def fail(text: str) -> None:
        print(f"rondevu demo: {text}", file=errors, flush=True)

    try:
        with _quiet_libraries():
            anyio.run(_demo, timeline, verbose, timeout)
    except TimeoutError:
        fail(f"FAILED: timed out after {timeout:g} s while {timeline.step}")
        return EXIT_FAILED
    except (RondevuError, OSError, httpx.HTTPError) as error:
        fail(f"FAILED while {timeline.step}: {error}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        fail("interrupted")
        return EXIT_INTERRUPTED
    timeline.result(f"rondevu demo: OK in {timeline.ms()} ms")
    return EXIT_OK


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Keep library chatter off the timeline.

    uvicorn's own reports (start-up, shutdown, a lifespan cut short by the demo's
    timeout) are silenced: the demo reports its failures itself, naming the step.
    aioice and aiortc keep their errors, which reach stderr through Python's
    last-resort handler.
    """
    levels_wanted = {
        "uvicorn": logging.CRITICAL,
        "uvicorn.error": logging.CRITICAL,
        "aioice": logging.ERROR,
        "aiortc": logging.ERROR,
    }
    loggers = [logging.getLogger(name) for name in levels_wanted]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(levels_wanted[logger.name])
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal capture: Ctrl-C must reach the demo, not the server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def embedded_server(host: str = LOOPBACK) -> AsyncIterator[str]:
    """Serve a fresh signaling server (SQLite ``:memory:``) over HTTP on ``host``, on a
    free port, for the duration of the block; yields its base URL.

    The socket is bound before uvicorn starts, so requests sent early just wait in the
    listen queue.  Leaving the block stops uvicorn and closes the server's storage.
    """
    config = ServerConfig(host=host, port=0, db=":memory:")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        # Opened and closed here, not in the ASGI lifespan: a cancelled start-up then
        # cannot leave a half-open database behind uvicorn's back.
        rondevu_server = await RondevuServer.open(config)
        try:
            server = _EmbeddedServer(
                uvicorn.Config(
                    RondevuApp(config, server=rondevu_server),
                    lifespan="on",
                    log_config=None,
                    access_log=False,
                    server_header=False,
                    timeout_graceful_shutdown=2,
                )
            )
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: server.serve(sockets=[sock]))
                try:
                    url_host = f"[{host}]" if ":" in host else host
                    yield f"http://{url_host}:{port}"
                finally:
                    server.should_exit = True
        finally:
            with anyio.CancelScope(shield=True):
                await rondevu_server.aclose()


async def _demo(timeline: Timeline, verbose: bool, limit_s: float) -> None:
    with anyio.fail_after(limit_s):
        await _timeline(timeline, verbose)


def _show(data: Payload) -> str:
    return repr(data) if isinstance(data, str) else f"{len(data)} bytes {data.hex(' ')}"


async def _timeline(t: Timeline, verbose: bool) -> None:
    t.step = "starting the signaling server"
    async with embedded_server() as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            health = await http.get("/health")
            health.raise_for_status()
        t.say("server", f"signaling server up at {url} (SQLite :memory:)")

        peer_options: dict[str, Any] = {
            "ice_servers": [],
            "host_addresses": [LOOPBACK],
            "connection_config": _DEMO_CONNECTION,
        }
        async with (
            Rondevu.connect(url, username="alice", **peer_options) as alice,
            Rondevu.connect(url, username="bob", **peer_options) as bob,
        ):
            await _scenario(t, alice, bob, verbose)
            t.step = "shutting down"
            t.say("demo", "closing both peers and the server")
    t.say("server", "stopped; nothing left running")


async def _scenario(t: Timeline, alice: Rondevu, bob: Rondevu, verbose: bool) -> None:
    t.step = "publishing alice's service"
    alice.publish_service(SERVICE, max_offers=2)
    await alice.start_filling()  # returns once the offers are on the server
    t.say("alice", f"published {SERVICE}@alice ({alice.get_service_status().offer_count} offers)")

    incoming = alice.incoming()

    t.step = "connecting bob to alice"
    t.say("bob", f"connecting to {SERVICE}@alice")
    link = await bob.connect_to_service(f"{SERVICE}@alice")
    _narrate(t, link, verbose)
    await link.wait_connected()
    first = await anext(incoming)
    t.say("alice", f"peer connected on offer {(first.offer_id or '?')[:8]}")

    t.step = "exchanging messages"
    link.send("hello alice")
    link.send(b"\x00\x01\x02\xff")
    for _ in range(2):
        t.say("alice", f"received {_show(await first.receive())}")
    first.send("hi bob")
    first.send(b"\xca\xfe")
    for _ in range(2):
        t.say("bob", f"received {_show(await link.receive())}")

    t.step = "cutting the link"
    disconnected = anyio.Event()
    link.on("disconnected", lambda _event: disconnected.set())
    t.say("alice", "cutting the link: closing her raw WebRTC peer connection")
    raw = first.peer_connection
    if raw is None:
        raise RondevuError("alice's connection has no peer connection to cut")
    await raw.close()
    await disconnected.wait()

    t.step = "buffering while disconnected"
    down = ["sent while down #1", "sent while down #2"]
    for text in down:
        link.send(text)

    t.step = "reconnecting bob"
    old_offer = first.offer_id
    reconnected = anyio.Event()
    link.on("reconnect:success", lambda _event: reconnected.set())
    await reconnected.wait()
    if first.closed:  # no session layer: the peer comes back as a new connection
        second = await anext(incoming)
        how = "peer reconnected"
    else:  # the session layer: alice's connection resumes the same session
        second = first
        await second.wait_connected()
        how = "same connection, session resumed"
    if second.offer_id == old_offer:
        raise RondevuError("bob reconnected through the offer he had already used")
    t.say(
        "alice",
        f"{how} on a fresh offer {(second.offer_id or '?')[:8]} (was {(old_offer or '?')[:8]})",
    )

    t.step = "receiving the replayed messages"
    for expected in down:
        data = await second.receive()
        if data != expected:
            raise RondevuError(f"alice received {data!r}, expected {expected!r}")
        t.say("alice", f"received {_show(data)} (replayed)")
    second.send("welcome back")
    t.say("bob", f"received {_show(await link.receive())}")

    t.step = "closing the link"
    await link.close("demo finished")
    await _aclose_iterator(incoming)


async def _aclose_iterator(iterator: AsyncIterator[DurableConnection]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _narrate(t: Timeline, link: DurableConnection, verbose: bool) -> None:
    """Print bob's link events as they happen."""

    def on_event(event: ev.Event) -> None:
        match event:
            case ev.StateChanged(old=old, new=new, reason=reason) if verbose:
                t.say("bob", f"state {old} -> {new}" + (f" ({reason})" if reason else ""))
            case ev.Connected():
                t.say("bob", "connected (ICE up, data channel open)")
            case ev.Disconnected(reason=reason):
                t.say("bob", f"disconnected: {reason}")
            case ev.Failed(error=error):
                t.say("bob", f"attempt failed: {error}")
            case ev.ReconnectScheduled(attempt=attempt, delay=delay, max_attempts=most):
                t.say("bob", f"reconnect:scheduled attempt {attempt}/{most} in {delay} ms")
            case ev.ReconnectAttempting(attempt=attempt):
                t.say("bob", f"reconnecting (attempt {attempt})")
            case ev.ReconnectSuccess(attempt=attempt):
                t.say("bob", f"reconnected after {attempt} attempt(s)")
            case ev.MessageBuffered(data=data):
                t.say("bob", f"message:buffered {_show(data)}")
            case ev.MessageReplayed(data=data):
                t.say("bob", f"message:replayed {_show(data)}")
            case ev.Closed(reason=reason):
                t.say("bob", f"closed: {reason}")
            case _:
                pass

    link.on("*", on_event)
