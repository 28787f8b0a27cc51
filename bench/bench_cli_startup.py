"""How long ``rondevu --version`` takes, against the interpreter's own start-up.

Goal (issue #14): under 0.2 s.  Each figure is the median wall time of ``--runs`` runs
of a fresh process, measured in the same run as its baselines:

- **floor**: ``python -c pass`` (the interpreter alone: no command can beat it);
- **rondevu --version**: ``python -m rondevu.cli --version``, what the console script
  runs;
- **full stack**: ``python -c "import rondevu.client"``, which is what ``--version``
  paid before commands and ``rondevu`` were imported lazily.

One untimed run of each comes first (the disk cache, the bytecode cache).

    .venv/bin/python bench/bench_cli_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 0.2

CASES = {
    "floor (python -c pass)": ["-c", "pass"],
    "rondevu --version": ["-m", "rondevu.cli", "--version"],
    "full stack (import rondevu.client)": ["-c", "import rondevu.client"],
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "schemas"), str(ROOT / "drivers")]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return env


def _once(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=_env(), cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per case (default 15)")
    runs = parser.parse_args().runs
    medians: dict[str, float] = {}
    for name, args in CASES.items():
        _once(args)  # warm-up
        medians[name] = statistics.median(_once(args) for _ in range(runs))
    floor = medians["floor (python -c pass)"]
    for name, median in medians.items():
        print(f"{name:<36} {median * 1000:7.1f} ms   {median / floor:5.1f}x floor")
    version = medians["rondevu --version"]
    verdict = "meets" if version < GOAL_S else "MISSES"
    print(f"rondevu --version {verdict} the {GOAL_S:g} s goal ({runs} runs each, medians)")


if __name__ == "__main__":
    main()
