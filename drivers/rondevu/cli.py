"""The ``rondevu`` command line: one sub-command per job a person runs first."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rondevu import __version__

__all__ = ["build_parser", "main"]


def _demo(_args: argparse.Namespace) -> int:
    print(
        "rondevu demo: an embedded signaling server on 127.0.0.1 and two peers that "
        "connect, exchange messages, lose the link, reconnect and replay what was buffered.\n"
        "The peers are not built yet (see the open issue on drivers and the client); "
        "this command will run the whole timeline once they are."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rondevu`` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="rondevu", description="WebRTC rendezvous")
    parser.add_argument("--version", action="version", version=f"rondevu {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="embedded server + two peers exchanging messages")
    demo.set_defaults(run=_demo)
    from rondevu_server.cli import add_serve_command  # the server is optional at import

    add_serve_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rondevu`` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
