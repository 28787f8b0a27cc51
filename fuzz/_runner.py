"""The command line every fuzz target shares: atheris when installed, else a seeded loop.

Run a target from the repository root as a module, e.g.
``python -m fuzz.fuzz_rules --iterations 10000 [--seed S] [--max-len N]`` (a plain loop
over seeded random inputs), or without ``--iterations`` under atheris when it is
installed (extra arguments go to atheris).  atheris is optional, not a dependency.
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
from collections.abc import Callable, Sequence

__all__ = ["run"]


def run(
    test_one_input: Callable[[bytes], None],
    *,
    name: str,
    default_iterations: int = 10_000,
    max_len: int = 512,
    argv: Sequence[str] | None = None,
) -> int:
    """Fuzz ``test_one_input``; the exit status (0: no finding)."""
    parser = argparse.ArgumentParser(prog=name)
    parser.add_argument("--iterations", type=int, help="run a plain seeded loop this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-len", type=int, default=max_len)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.iterations is None:
        try:
            atheris = importlib.import_module("atheris")
        except ImportError:
            args.iterations = default_iterations
        else:
            atheris.Setup([name, *rest], test_one_input)
            atheris.Fuzz()
            return 0
    rng = random.Random(args.seed)
    for _ in range(args.iterations):
        test_one_input(rng.randbytes(rng.randint(0, args.max_len)))
    print(f"{name}: {args.iterations} inputs, no finding")
    return 0
