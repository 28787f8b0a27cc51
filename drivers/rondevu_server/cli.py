"""``rondevu serve``: run the signaling server with uvicorn (uvloop + httptools).

Settings come from defaults, then ``RONDEVU_*`` environment variables, then flags.  The
listening socket is bound here (loopback by default), optionally with SO_REUSEPORT so a
supervisor can start several processes on one port over one PostgreSQL database.
uvicorn handles SIGINT and SIGTERM: it stops accepting, lets open requests finish, runs
the app's lifespan shutdown (cleanup task stopped, storage closed) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
import uvloop

from rondevu_server.asgi import RondevuApp
from rondevu_server.config import ServerConfig
from rondevu_server.logs import configure_logging
from rondevu_server.uvicorn_http import CoalescingHttpProtocol

__all__ = ["ListenError", "add_serve_command", "bind_socket", "serve", "uvicorn_config"]

log = logging.getLogger("rondevu_server")


def add_serve_command(commands: Any) -> None:
    """Register ``serve`` on an argparse sub-parsers object."""
    parser = commands.add_parser(
        "serve",
        help="run the signaling server",
        description="Run the Rondevu signaling server.  Every setting can also be given "
        "as an environment variable RONDEVU_<NAME> (e.g. RONDEVU_MAX_SDP_CHARS).",
    )
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 3000)")
    parser.add_argument("--db", help=":memory:, a SQLite path, or a postgresql:// DSN")
    parser.add_argument("--db-schema", help="PostgreSQL schema for the tables")
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        default=None,
        help="bind with SO_REUSEPORT (several processes on one port)",
    )
    parser.add_argument("--log-level", help="debug, info, warning or error")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        config = ServerConfig.from_env(
            os.environ,
            host=args.host,
            port=args.port,
            db=args.db,
            db_schema=args.db_schema,
            reuse_port=args.reuse_port,
            log_level=args.log_level,
        )
    except (TypeError, ValueError) as error:
        print(f"rondevu serve: {error}", file=sys.stderr)
        return 2
    try:
        serve(config)
    except ListenError as error:
        print(f"rondevu serve: {error}", file=sys.stderr)
        return 1
    return 0


class ListenError(Exception):
    """The server could not listen where it was told (port taken, address not ours)."""


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def uvicorn_config(app: RondevuApp, **overrides: Any) -> uvicorn.Config:
    """uvicorn settings for serving ``app`` (``overrides`` for tests, e.g. ``loop``).

    One write per response (`CoalescingHttpProtocol`), no access log, no Server or Date
    header, no websockets, and no proxy-header rewriting: the app applies
    ``trust_forwarded_for`` itself, so there is exactly one place that trusts a proxy.

    From ``app.config``: the protocol enforces ``max_header_bytes`` (431) and
    ``request_timeout`` (408 and close), see `rondevu_server.uvicorn_http`; and
    ``max_connections`` becomes uvicorn's ``limit_concurrency``.  uvicorn still accepts
    every connection, but a request whose head completes while ``max_connections``
    other connections are open (or more requests than that are still being answered) gets
    ``503 Service Unavailable`` (uvicorn's text body) with ``connection: close``, so at
    most ``max_connections`` connections are served at once; uvicorn's limit counts the
    connection asking too, hence the ``+ 1``.  A connection that sends nothing is closed
    after ``request_timeout``.  0 disables the limit.
    """
    config = app.config
    settings: dict[str, Any] = {
        "loop": "uvloop",
        "http": CoalescingHttpProtocol.for_config(config),
        "limit_concurrency": config.max_connections + 1 if config.max_connections > 0 else None,
        "ws": "none",
        "lifespan": "on",
        "proxy_headers": False,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "date_header": False,
        "timeout_graceful_shutdown": 10,
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)


def serve(config: ServerConfig) -> None:
    """Serve until SIGINT or SIGTERM; `ListenError` when the socket cannot be bound."""
    configure_logging(config.log_level)
    try:
        sock = bind_socket(config.host, config.port, reuse_port=config.reuse_port)
    except OSError as error:
        where = f"{config.host}:{config.port}"
        raise ListenError(f"cannot listen on {where}: {error.strerror or error}") from None
    host, port = sock.getsockname()[:2]
    log.info("listening", extra={"host": host, "port": port, "pid": os.getpid()})
    app = RondevuApp(config)
    server = _Server(uvicorn_config(app), app)
    try:
        uvloop.run(_serve(server, sock))
    finally:
        sock.close()
    log.info("exited", extra={"pid": os.getpid()})


class _Server(uvicorn.Server):
    """uvicorn's server without its signal capture: `_serve` installs our own handlers,
    so SIGTERM ends in a clean exit 0 instead of being re-raised after shutdown.  Told
    to stop, it first answers the held calls (long polling): uvicorn waits for open
    requests before the app's shutdown, and a held call may have 25 s to go."""

    def __init__(self, config: uvicorn.Config, app: RondevuApp) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._app.release_waiters()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(server: _Server, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.handle_exit, signum, None)
    await server.serve(sockets=[sock])
