"""The ``rondevu`` command line: one sub-command per job a person runs first."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rondevu import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rondevu`` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="rondevu", description="WebRTC rendezvous")
    parser.add_argument("--version", action="version", version=f"rondevu {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    from rondevu.cli_demo import add_demo_command
    from rondevu.cli_peer import add_peer_commands

    add_demo_command(commands)
    add_peer_commands(commands)
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
