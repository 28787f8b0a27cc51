"""``rondevu serve``: run the signaling server with uvicorn (uvloop + httptools).

Settings come from defaults, then ``RONDEVU_*`` environment variables, then flags.  The
listening socket is bound here (loopback by default), optionally with SO_REUSEPORT so a
supervisor can start several processes on one port over one PostgreSQL database.
On SIGINT or SIGTERM uvicorn stops accepting, lets open requests finish and runs the
app's lifespan shutdown (cleanup task stopped), then the storage is closed; the exit
code is 0 after SIGTERM (a supervisor's stop) and 130 after Ctrl-C, as in every
``rondevu`` command.

Every way start-up can fail ends in one line on stderr, never a traceback: a bad value
(flag or ``RONDEVU_*`` variable) exits 2 (`EXIT_USAGE`), a socket that cannot be bound 1,
a database that cannot be opened 3 (`EXIT_NO_DATABASE`).  The storage is opened before
uvicorn starts, so its failure is ours to word, not a lifespan error in the logs.  Once
the server answers, one plain ``listening on http://HOST:PORT`` line goes to stderr for
the person who started it; the JSON log lines are for machines.
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
import urllib.parse
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from rondevu.cli_options import EXIT_INTERRUPTED, EXIT_USAGE
from rondevu_server.asgi import RondevuApp, redact_db_url
from rondevu_server.config import ServerConfig
from rondevu_server.logs import configure_logging
from rondevu_server.server import RondevuServer
from rondevu_server.uvicorn_http import CoalescingHttpProtocol

__all__ = [
    "EXIT_NO_DATABASE",
    "LOG_LEVELS",
    "DatabaseError",
    "ListenError",
    "add_serve_command",
    "bind_socket",
    "check_config",
    "database",
    "log_level",
    "package_version",
    "port",
    "serve",
    "uvicorn_config",
]

log = logging.getLogger("rondevu_server")

EXIT_LISTEN = 1
"""The socket could not be bound (port taken, address not ours)."""
EXIT_NO_DATABASE = 3
"""The database could not be opened (unreachable, refused, missing directory...)."""

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_DB_SCHEMES = ("sqlite://", "postgresql://", "postgres://")


# -- value checks (argparse ``type=`` functions, also applied to RONDEVU_* values) ---------


def port(text: str) -> int:
    """A TCP port, 0..65535 (0: any free port, the one chosen is logged)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return value


def log_level(text: str) -> str:
    """A logging level name, any case."""
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.lower()


def database(text: str) -> str:
    """``:memory:``, a SQLite path, ``sqlite:///path`` or a ``postgresql://`` DSN.

    Only the form is checked here; whether it opens is known when it is opened.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value is not a database")
    if "://" in text and not text.startswith(_DB_SCHEMES):
        scheme = text.split("://", 1)[0]
        raise argparse.ArgumentTypeError(
            f"{redact_db_url(text)!r}: {scheme}:// is not supported (use :memory:, a SQLite "
            "path, sqlite:///path or postgresql://...)"
        )
    if text.startswith(("postgresql://", "postgres://")):
        try:
            urllib.parse.urlsplit(text).port  # noqa: B018 - raises for a bad port
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{redact_db_url(text)!r} has an invalid port (1..65535)"
            ) from None
    return text


def check_config(config: ServerConfig, environ: Mapping[str, str]) -> None:
    """Apply the flags' checks to values that came from ``RONDEVU_*`` variables.

    Flags were checked while parsing, so a value that fails here came from the
    environment; the error names that variable.
    """
    checks: tuple[tuple[str, Any, Any], ...] = (
        ("port", config.port, port),
        ("log_level", config.log_level, log_level),
        ("db", config.db, database),
    )
    for field, value, check in checks:
        try:
            check(str(value))
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"RONDEVU_{field.upper()}: {error}") from None


def package_version() -> str:
    """The installed ``rondevu`` distribution's version (what ``/health`` reports)."""
    try:
        return metadata.version("rondevu")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from rondevu import __version__

        return __version__


def add_serve_command(commands: Any) -> None:
    """Register ``serve`` on an argparse sub-parsers object."""
    parser = commands.add_parser(
        "serve",
        help="run the signaling server",
        description="Run the Rondevu signaling server.  Every setting can also be given "
        "as an environment variable RONDEVU_<NAME> (e.g. RONDEVU_MAX_SDP_CHARS).",
        epilog=f"exit codes: 0 stopped by SIGTERM, {EXIT_LISTEN} cannot listen, "
        f"{EXIT_USAGE} bad setting, {EXIT_NO_DATABASE} cannot open the database, "
        f"{EXIT_INTERRUPTED} stopped by Ctrl-C (SIGINT).  Both signals let open requests "
        "finish and close the database first.",
    )
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port, help="TCP port (default 3000; 0: any free port)")
    parser.add_argument(
        "--db",
        type=database,
        help=":memory: (default), a SQLite path or sqlite:///path, or a postgresql:// DSN",
    )
    parser.add_argument("--db-schema", help="PostgreSQL schema for the tables")
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        default=None,
        help="bind with SO_REUSEPORT (several processes on one port)",
    )
    parser.add_argument(
        "--log-level",
        type=log_level,
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (default info)",
    )
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
            # The original reports its VERSION variable or "unknown"; a deployment is
            # easier to check when /health names the release it runs.
            version=None if "RONDEVU_VERSION" in os.environ else package_version(),
        )
        check_config(config, os.environ)
    except (TypeError, ValueError) as error:
        print(f"rondevu serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        code = serve(config)
    except ListenError as error:
        print(f"rondevu serve: {error}", file=sys.stderr)
        return EXIT_LISTEN
    except DatabaseError as error:
        print(f"rondevu serve: {error}", file=sys.stderr)
        return EXIT_NO_DATABASE
    return code


class ListenError(Exception):
    """The server could not listen where it was told (port taken, address not ours)."""


class DatabaseError(Exception):
    """The database could not be opened; the text names it (without its password)."""


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


def serve(config: ServerConfig) -> int:
    """Serve until SIGINT or SIGTERM; the exit code: 0 after SIGTERM (a supervisor's
    stop), `EXIT_INTERRUPTED` after SIGINT (Ctrl-C, as in every ``rondevu`` command).
    Both first let open requests finish and close the database.

    Raises `ListenError` when the socket cannot be bound and `DatabaseError` when the
    database cannot be opened, each before a request is served.
    """
    configure_logging(config.log_level)
    try:
        sock = bind_socket(config.host, config.port, reuse_port=config.reuse_port)
    except OSError as error:
        where = f"{config.host}:{config.port}"
        raise ListenError(f"cannot listen on {where}: {error.strerror or error}") from None
    except OverflowError:  # a port out of range given in Python, not through the CLI
        raise ListenError(f"cannot listen on port {config.port}: not 0..65535") from None
    try:
        stopped_by = uvloop.run(_serve(config, sock))
    finally:
        sock.close()
    log.info("exited", extra={"pid": os.getpid()})
    return EXIT_INTERRUPTED if stopped_by == signal.SIGINT else 0


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server without its signal capture (`_serve` installs our own handlers,
    so SIGTERM ends in a clean exit 0 instead of being re-raised after shutdown), with
    one line for people once it answers.  Told to stop, it first answers the held calls
    (long polling): uvicorn waits for open requests before the app's shutdown, and a
    held call may have 25 s to go."""

    def __init__(self, config: uvicorn.Config, app: RondevuApp) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._app.release_waiters()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]
            with contextlib.suppress(OSError, ValueError):  # stderr gone: serve anyway
                print(f"rondevu serve: listening on {_url(host, port)}", file=sys.stderr)
                sys.stderr.flush()


async def _serve(config: ServerConfig, sock: socket.socket) -> int | None:
    """Serve on ``sock``; the signal that stopped the server."""
    try:
        rondevu = await RondevuServer.open(config)
    except Exception as error:
        raise DatabaseError(_open_failure(config.db, error)) from None
    # Logged once the database is open, so a start-up that fails says only why.
    host, port = sock.getsockname()[:2]
    log.info("listening", extra={"host": host, "port": port, "pid": os.getpid()})
    try:
        app = RondevuApp(config, server=rondevu)
        server = _Server(uvicorn_config(app), app)
        loop = asyncio.get_running_loop()
        stopped_by: list[int] = []

        def stop(signum: int) -> None:
            stopped_by.append(signum)
            server.handle_exit(signum, None)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop, signum)
        await server.serve(sockets=[sock])
        return stopped_by[0] if stopped_by else None
    finally:
        await rondevu.aclose()


def _open_failure(db: str, error: Exception) -> str:
    """The line for a database that did not open: which one, and why in words."""
    name = redact_db_url(db)
    if not db.startswith(("postgresql://", "postgres://")):
        path = db.removeprefix("sqlite://")
        parent = Path(path).parent
        if not parent.is_dir():
            return f"cannot open the SQLite database {path}: the folder {parent} does not exist"
        return f"cannot open the SQLite database {path}: {error}"
    if isinstance(error, TimeoutError):
        reason = "no answer in time"
    else:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return f"cannot open the PostgreSQL database {name}: {reason}"
