"""Every fuzz target in fuzz/ runs over a few hundred generated inputs on each test run.

A target is a ``fuzz/fuzz_*.py`` module that defines ``test_one_input(data: bytes)``;
new targets are picked up without touching this file.  The only exception a target may
let escape is `ProtocolError` (STYLE.md point 7); anything else is a finding.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rondevu_core.errors import ProtocolError

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
TARGET_FILES = sorted(FUZZ.glob("fuzz_*.py"))


@functools.cache
def load_target(path: Path) -> Callable[[bytes], None] | None:
    """The module's ``test_one_input``, or None when it defines none."""
    name = f"_fuzz_targets.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses in a target look their module up here
    spec.loader.exec_module(module)
    target = getattr(module, "test_one_input", None)
    return target if callable(target) else None


def test_fuzz_targets_exist() -> None:
    assert any(load_target(path) for path in TARGET_FILES)


@pytest.mark.parametrize("path", TARGET_FILES, ids=lambda p: p.stem)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=1024))
def test_fuzz_target_allows_only_protocol_errors(path: Path, data: bytes) -> None:
    target = load_target(path)
    if target is None:
        pytest.skip(f"{path.name} defines no test_one_input")
    with contextlib.suppress(ProtocolError):
        target(data)
