"""``rondevu --version`` and ``--help`` answer without importing the client stack.

The time itself is measured in bench/bench_cli_startup.py (timings do not belong in
unit tests); what is tested here is its cause: which modules get imported.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from rondevu import __version__
from tests.cli_testing import DEADLINE_S, ROOT, cli_env

HEAVY = ("aiortc", "httpx", "anyio", "asyncio", "pydantic", "nacl", "uvicorn", "rondevu_core")
"""Top-level packages a quick answer must not import (the first three alone cost most
of the 0.7 s `rondevu --version` used to take)."""


def _imported(*python_args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run python with ``-X importtime``; its result and the top-level packages imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *python_args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=ROOT,
        timeout=DEADLINE_S,
        check=False,
    )
    modules = set()
    for line in result.stderr.splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", line)
        if found:
            modules.add(found.group(1).split(".")[0])
    return result, modules


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_a_quick_answer_imports_nothing_heavy(flag: str) -> None:
    result, modules = _imported("-m", "rondevu.cli", flag)
    assert result.returncode == 0
    assert "rondevu" in modules  # the parse worked: the package was seen
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))
    if flag == "--version":
        assert result.stdout == f"rondevu {__version__}\n"


def test_importing_rondevu_is_lazy_but_complete() -> None:
    code = (
        "import sys, rondevu\n"
        "assert 'rondevu.client' not in sys.modules\n"
        "from rondevu import Rondevu, Identity\n"
        "assert Rondevu.__module__ == 'rondevu.client'\n"
        "missing = [n for n in rondevu.__all__ if not hasattr(rondevu, n)]\n"
        "assert not missing, missing\n"
        "assert set(rondevu.__all__) <= set(dir(rondevu))\n"
        "print('ok')\n"
    )
    result, _ = _imported("-c", code)
    assert result.stdout == "ok\n", result.stderr[-2000:]


def test_an_unknown_name_is_an_attribute_error() -> None:
    import rondevu

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = rondevu.Nope  # type: ignore[attr-defined]
