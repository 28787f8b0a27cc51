"""The ``rondevu`` command line: one sub-command per job a person runs first.

Each command lives in its own module, imported only when that command runs: ``rondevu
--version`` and ``rondevu --help`` import none of them (nor aiortc, httpx or the
server), so they answer at once.  The listing of ``rondevu --help`` comes from the
`COMMANDS` table below.

`main` is the one place where a run ends, and every ending is one line at most:
- a command's `CliError`, or any `RondevuError`, prints ``rondevu CMD: <text>`` and
  exits with its code (found inside exception groups, as task groups wrap errors);
- Ctrl-C at any moment, imports included, prints ``rondevu CMD: interrupted`` and exits
  130 (the same code in every command; SIGTERM is a graceful stop, exit 0);
- anything unexpected prints one ``internal error`` line and exits 1, unless
  ``RONDEVU_DEBUG=1`` asks for the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterable, Iterator, Sequence
from importlib import import_module
from typing import NamedTuple

from rondevu import __version__
from rondevu.cli_options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    Parser,
)

__all__ = ["COMMANDS", "Command", "build_parser", "main", "summary"]

DEBUG_ENV = "RONDEVU_DEBUG"


class Command(NamedTuple):
    """A sub-command: its name, its line in ``rondevu --help``, and where it is defined.

    A named tuple rather than a dataclass: ``dataclasses`` imports ``inspect``, a
    sizeable part of ``rondevu --version``'s start-up.
    """

    name: str
    summary: str
    module: str
    register: str
    """The function of ``module`` that adds the command to an argparse sub-parsers object."""


COMMANDS = (
    Command(
        name="demo",
        summary="embedded server + two peers: connect, cut the link, reconnect, replay",
        module="rondevu.cli_demo",
        register="add_demo_command",
    ),
    Command(
        name="publish",
        summary="publish a service and serve every peer that connects",
        module="rondevu.cli_peer",
        register="add_publish_command",
    ),
    Command(
        name="connect",
        summary="connect to a published service and chat through stdin/stdout",
        module="rondevu.cli_peer",
        register="add_connect_command",
    ),
    Command(
        name="keygen",
        summary="create an identity file (username + key pair)",
        module="rondevu.cli_identity",
        register="add_keygen_command",
    ),
    Command(
        name="whoami",
        summary="show the username and public key of an identity file",
        module="rondevu.cli_identity",
        register="add_whoami_command",
    ),
    Command(
        name="serve",
        summary="run the signaling server",
        module="rondevu_server.cli",
        register="add_serve_command",
    ),
)


def summary(name: str) -> str:
    """The one-line help of command ``name`` (what ``rondevu --help`` lists)."""
    return next(command.summary for command in COMMANDS if command.name == name)


_EPILOG = f"""\
exit codes: 0 done (end of input, SIGTERM), 1 failure (server, network, peer),
2 bad input (option value, key file), 3 serve cannot open its database,
{EXIT_INTERRUPTED} interrupted (Ctrl-C).
Set {DEBUG_ENV}=1 to see the traceback of an internal error."""


def build_parser(commands: Iterable[str] | None = None) -> Parser:
    """The parser of ``rondevu``, with the named commands complete (None: every one).

    The other commands are listed (their summary) but not defined, so building this
    imports only the modules of the commands named.
    """
    wanted = None if commands is None else set(commands)
    parser = Parser(
        prog="rondevu",
        description="WebRTC rendezvous: a signaling server and peers that find each other by name.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rondevu {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = subparsers.choices
    for command in COMMANDS:
        if wanted is None or command.name in wanted:
            register = getattr(import_module(command.module), command.register)
            register(subparsers)
        else:
            subparsers.add_parser(command.name, help=command.summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rondevu`` console script; returns the exit code.

    Called without ``argv`` (as the program), it also ignores Ctrl-C once the exit code
    is decided: an impatient second Ctrl-C must not turn the interpreter's own exit
    into a traceback.
    """
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    finally:
        if argv is None:
            with contextlib.suppress(ValueError):  # not the main thread: not the program
                signal.signal(signal.SIGINT, signal.SIG_IGN)


def _main(argv: Sequence[str]) -> int:
    arguments = list(argv)
    chosen = _command_named(arguments)
    prog = "rondevu" if chosen is None else f"rondevu {chosen}"
    try:
        parser = build_parser([] if chosen is None else [chosen])
        args, unknown = parser.parse_known_args(arguments)
        if unknown:  # name the command's own --help, not the top level's
            target = parser.commands.get(args.command, parser)
            target.error(f"unrecognized arguments: {' '.join(unknown)}")
        code: int = args.run(args)
        return code
    except KeyboardInterrupt:
        _say(f"{prog}: interrupted")
        return EXIT_INTERRUPTED
    except BaseException as error:
        if isinstance(error, SystemExit):
            raise
        return _report(prog, error)


def _command_named(arguments: Sequence[str]) -> str | None:
    """The command in ``arguments``: the top level has only flags, so it is the first
    word that is not one."""
    names = {command.name for command in COMMANDS}
    for word in arguments:
        if not word.startswith("-"):
            return word if word in names else None
    return None


def _report(prog: str, error: BaseException) -> int:
    """One line for a failure, and its exit code."""
    from rondevu_core.errors import RondevuError

    leaves = list(_leaves(error))
    for leaf in leaves:
        if isinstance(leaf, CliError):
            _say(f"{prog}: {leaf}")
            return leaf.code
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        _say(f"{prog}: interrupted")
        return EXIT_INTERRUPTED
    for leaf in leaves:
        if isinstance(leaf, SystemExit):
            return leaf.code if isinstance(leaf.code, int) else EXIT_USAGE
        if isinstance(leaf, RondevuError):
            _say(f"{prog}: {leaf}")
            return EXIT_FAILED
        if isinstance(leaf, BrokenPipeError):
            # Whoever read our output has gone (``| head``): nothing more to say to them.
            _silence_stdout()
            return EXIT_FAILED
    if os.environ.get(DEBUG_ENV):
        raise error
    leaf = leaves[0] if leaves else error
    _say(
        f"{prog}: internal error: {type(leaf).__name__}: {leaf} "
        f"(set {DEBUG_ENV}=1 for the traceback)"
    )
    return EXIT_FAILED


def _leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, cancellations left out."""
    import asyncio

    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    elif not isinstance(error, asyncio.CancelledError):
        yield error


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr gone: the exit code remains
        print(line, file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    # Python flushes stdout at exit; on a closed pipe that would be one more error.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
