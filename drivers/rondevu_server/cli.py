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

``--workers N`` (N > 1) makes this process a supervisor of N server processes on one
port (`serve_workers`): it reserves the port (bound with SO_REUSEPORT, never listening,
so it takes no connection), and each worker binds and listens on it with SO_REUSEPORT,
so the kernel spreads new connections over the workers.  Each worker is a whole server
(its own event loop, storage pool, rate limiter and held calls; uvloop sets TCP_NODELAY
on every connection as in one process); they share only the database, which carries
the wake-ups of held calls between them, so ``:memory:`` is refused (exit 2).  The
``listening on`` line comes once every worker answers.  SIGINT or SIGTERM stops every
worker (each answers its held calls first) and exits as one process would; a worker
that ends by itself stops the others, and the supervisor exits with that worker's code
(1, 3) or 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from rondevu.cli_options import EXIT_INTERRUPTED, EXIT_USAGE
from rondevu_server.asgi import RondevuApp, redact_db_url
from rondevu_server.config import ServerConfig
from rondevu_server.logs import LOG_FORMATS, configure_logging
from rondevu_server.server import RondevuServer, shared_database
from rondevu_server.uvicorn_http import CoalescingHttpProtocol

__all__ = [
    "EXIT_NO_DATABASE",
    "LOG_LEVELS",
    "DatabaseError",
    "ListenError",
    "WorkerError",
    "add_serve_command",
    "bind_socket",
    "check_config",
    "database",
    "log_format",
    "log_level",
    "package_version",
    "port",
    "serve",
    "serve_workers",
    "uvicorn_config",
    "workers",
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


def log_format(text: str) -> str:
    """``auto``, ``json`` or ``text``, any case."""
    if text.lower() not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_FORMATS)}")
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


def workers(text: str) -> int:
    """A number of server processes, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes (1 or more)")
    return value


def check_config(config: ServerConfig, environ: Mapping[str, str]) -> None:
    """Apply the flags' checks to values that came from ``RONDEVU_*`` variables, and
    the one rule between settings: several workers need a database they share.

    Flags were checked while parsing, so a value that fails here came from the
    environment; the error names that variable.
    """
    checks: tuple[tuple[str, Any, Any], ...] = (
        ("port", config.port, port),
        ("log_level", config.log_level, log_level),
        ("log_format", config.log_format, log_format),
        ("db", config.db, database),
        ("workers", config.workers, workers),
    )
    for field, value, check in checks:
        try:
            check(str(value))
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"RONDEVU_{field.upper()}: {error}") from None
    if config.workers > 1 and not shared_database(config.db):
        raise ValueError(
            f"--workers {config.workers} needs a database the processes share "
            f"(a SQLite file or postgresql://...), and {config.db} is private to each"
        )


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
        "--workers",
        type=workers,
        metavar="N",
        help="server processes on the one port (default 1); more than one needs a "
        "database they share: a SQLite file or PostgreSQL",
    )
    parser.add_argument(
        "--log-level",
        type=log_level,
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (default info)",
    )
    parser.add_argument(
        "--log-format",
        type=log_format,
        metavar="FORMAT",
        help="text (lines for people), json (one object per line), or auto (default: "
        "text on a terminal, json otherwise)",
    )
    parser.add_argument(
        "--no-web-client",
        dest="web_client",
        action="store_false",
        default=None,
        help="do not serve the browser client and live page under /web/",
    )
    parser.add_argument(
        "--no-public-state",
        dest="public_state",
        action="store_false",
        default=None,
        help="do not answer GET /state (live service names, usernames and counts)",
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
            workers=args.workers,
            log_level=args.log_level,
            log_format=args.log_format,
            web_client=args.web_client,
            public_state=args.public_state,
            # The original reports its VERSION variable or "unknown"; a deployment is
            # easier to check when /health names the release it runs.
            version=None if "RONDEVU_VERSION" in os.environ else package_version(),
        )
        check_config(config, os.environ)
    except (TypeError, ValueError) as error:
        print(f"rondevu serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return serve_workers(config) if config.workers > 1 else serve(config)
    except ListenError as error:
        print(f"rondevu serve: {error}", file=sys.stderr)
        return EXIT_LISTEN
    except DatabaseError as error:
        print(f"rondevu serve: {error}", file=sys.stderr)
        return EXIT_NO_DATABASE
    except WorkerError as error:
        print(f"rondevu serve: {error}", file=sys.stderr)
        return error.code


class ListenError(Exception):
    """The server could not listen where it was told (port taken, address not ours)."""


class DatabaseError(Exception):
    """The database could not be opened; the text names it (without its password)."""


class WorkerError(Exception):
    """A worker of ``--workers`` ended by itself; ``code`` is the supervisor's exit code
    (the worker's own when it has one of ours, else `EXIT_LISTEN`)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def bind_socket(
    host: str, port: int, *, reuse_port: bool = False, listen: bool = True
) -> socket.socket:
    """A TCP socket bound to ``host:port``, listening unless ``listen`` is False (a
    reservation: with ``reuse_port``, other processes bind the same port and listen)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
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


def _bind(config: ServerConfig, *, reuse_port: bool, listen: bool = True) -> socket.socket:
    try:
        return bind_socket(config.host, config.port, reuse_port=reuse_port, listen=listen)
    except OSError as error:
        where = f"{config.host}:{config.port}"
        raise ListenError(f"cannot listen on {where}: {error.strerror or error}") from None
    except OverflowError:  # a port out of range given in Python, not through the CLI
        raise ListenError(f"cannot listen on port {config.port}: not 0..65535") from None


def serve(config: ServerConfig, *, on_ready: Callable[[], None] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; the exit code: 0 after SIGTERM (a supervisor's
    stop), `EXIT_INTERRUPTED` after SIGINT (Ctrl-C, as in every ``rondevu`` command).
    Both first let open requests finish and close the database.  Once it answers it
    prints the ``listening on`` line, or calls ``on_ready`` instead (a worker).

    Raises `ListenError` when the socket cannot be bound and `DatabaseError` when the
    database cannot be opened, each before a request is served.
    """
    configure_logging(config.log_level, config.log_format)
    sock = _bind(config, reuse_port=config.reuse_port)
    try:
        stopped_by = uvloop.run(_serve(config, sock, on_ready))
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

    def __init__(
        self, config: uvicorn.Config, app: RondevuApp, on_ready: Callable[[], None] | None
    ) -> None:
        super().__init__(config)
        self._app = app
        self._on_ready = on_ready

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._app.release_waiters()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()
        elif self.started and sockets:
            host, port = sockets[0].getsockname()[:2]
            _announce(host, port)


def _announce(host: str, port: int) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr gone: serve anyway
        print(f"rondevu serve: listening on {_url(host, port)}", file=sys.stderr)
        sys.stderr.flush()


async def _serve(
    config: ServerConfig, sock: socket.socket, on_ready: Callable[[], None] | None
) -> int | None:
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
        server = _Server(uvicorn_config(app), app, on_ready)
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


# -- several workers ---------------------------------------------------------------------

_STOP_S = 30.0
"""How long stopped workers get to exit before they are killed (uvicorn gives open
requests 10 s)."""


def serve_workers(config: ServerConfig) -> int:
    """Run ``config.workers`` server processes on one port until SIGINT or SIGTERM; the
    exit code as `serve` gives it.

    Raises `ListenError` when the port cannot be reserved and `WorkerError` when a
    worker ended by itself (after stopping the others).
    """
    configure_logging(config.log_level, config.log_format)
    reserved = _bind(config, reuse_port=True, listen=False)
    host, bound = reserved.getsockname()[:2]
    one = dataclasses.replace(config, port=bound, reuse_port=True, workers=1)
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited
    workers: list[multiprocessing.process.BaseProcess] = []
    stopped_by: list[int] = []

    def stop(signum: int = signal.SIGTERM, _frame: object = None) -> None:
        stopped_by.append(signum)
        for worker in workers:
            if worker.exitcode is None and worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    failed: multiprocessing.process.BaseProcess | None = None
    failure: tuple[int, str] | None = None  # a worker's exit code and its one line
    try:
        log.info("workers", extra={"host": host, "port": bound, "workers": config.workers})
        waiting: list[multiprocessing.connection.Connection] = []
        for number in range(config.workers):
            if stopped_by:
                break
            mine, theirs = spawn.Pipe(duplex=False)
            process = spawn.Process(
                target=_worker, args=(one, theirs), name=f"rondevu-worker-{number}"
            )
            process.start()
            theirs.close()
            workers.append(process)
            waiting.append(mine)
        while not stopped_by:
            ready = multiprocessing.connection.wait(
                [*waiting, *(worker.sentinel for worker in workers)]
            )
            for conn in waiting[:]:
                if conn not in ready:
                    continue
                try:
                    news = conn.recv()
                except EOFError:  # the worker died before it could say why
                    news = None
                conn.close()
                waiting.remove(conn)
                if news is not None and news[0] == "failed":
                    failure = failure or (news[1], news[2])
                elif news is not None and not waiting and failure is None:
                    _announce(host, bound)
            ended = [worker for worker in workers if worker.exitcode is not None]
            if (ended or failure) and not stopped_by:
                failed = ended[0] if ended else None
                stop()
                break
        deadline = time.monotonic() + _STOP_S
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.exitcode is None:
                worker.kill()
                worker.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reserved.close()
    if failure is not None:
        raise WorkerError(failure[1], failure[0])
    if failed is not None:
        raise WorkerError(f"worker {failed.pid} exited with code {failed.exitcode}", EXIT_LISTEN)
    log.info("exited", extra={"pid": os.getpid()})
    return EXIT_INTERRUPTED if stopped_by and stopped_by[0] == signal.SIGINT else 0


def _worker(config: ServerConfig, report: multiprocessing.connection.Connection) -> None:
    """One worker of `serve_workers`, in its own process: sends ``("ready",)`` on
    ``report`` once it answers, or ``("failed", exit code, line)`` when it cannot start
    (the supervisor prints the line, once), and exits with `serve`'s code."""
    try:
        code = serve(config, on_ready=lambda: report.send(("ready",)))
    except ListenError as error:
        report.send(("failed", EXIT_LISTEN, str(error)))
        code = EXIT_LISTEN
    except DatabaseError as error:
        report.send(("failed", EXIT_NO_DATABASE, str(error)))
        code = EXIT_NO_DATABASE
    sys.exit(code)
