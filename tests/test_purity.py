"""The core stays sans-IO: no module of rondevu_core imports I/O, clocks or randomness.

Checked on the syntax tree, so an import hidden in a function body or a ``from x import``
form is caught too, as is a call to ``datetime.now``/``utcnow``/``today``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "rondevu_core"
FORBIDDEN_MODULES = {
    "asyncio",
    "anyio",
    "trio",
    "httpx",
    "aiortc",
    "aioice",
    "socket",
    "time",
    "random",
    "secrets",
    "os",
    "threading",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today"}
CORE_FILES = sorted(CORE.rglob("*.py"))


def offences(source: str) -> list[str]:
    """Every forbidden import or clock call in ``source``, as readable strings."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            names = []
        found += [f"import {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_CALLS:
            found.append(f"call .{func.attr}()")
        if isinstance(func, ast.Name) and func.id == "__import__":
            found.append("call __import__()")
    return found


def test_core_has_modules() -> None:
    assert len(CORE_FILES) >= 5


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_is_pure(path: Path) -> None:
    assert offences(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "import os.path",
        "from asyncio import sleep",
        "def f():\n    import random",
        "from datetime import datetime\nx = datetime.now()",
        "__import__('socket')",
    ],
)
def test_guard_catches_offences(source: str) -> None:
    assert offences(source)


def test_guard_allows_pure_code() -> None:
    assert offences("import hashlib\nfrom dataclasses import dataclass\nx = 1") == []


MODULE_LINES_WITHOUT_REASON = 400


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_a_long_core_module_says_why_at_its_top(path: Path) -> None:
    """A core module past ~400 lines states at its top why it is one module (a
    ``Size.`` paragraph in its docstring); otherwise it should be split by
    responsibility, as the connection and the pool are."""
    source = path.read_text()
    if source.count("\n") <= MODULE_LINES_WITHOUT_REASON:
        return
    docstring = ast.get_docstring(ast.parse(source)) or ""
    assert "\nSize.  " in docstring, f"{path.name}: {source.count(chr(10))} lines, no reason"
