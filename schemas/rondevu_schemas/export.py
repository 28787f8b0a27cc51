"""Write or check the JSON Schema of every wire model: ``python -m rondevu_schemas.export``.

One file per public model, ``schemas/json/<ModelName>.json``: the model's validation
schema (JSON Schema 2020-12, wire names), pretty-printed with sorted keys and a trailing
newline so the files diff cleanly and regenerate byte for byte.  The files are for
implementers in other languages; the models stay the source of truth.

``--check`` writes nothing and exits 1 when a file is missing, stale, or has no model
(CI and ``tests/test_schemas_export.py`` use it); without it the directory is brought up
to date, stale ``.json`` files included.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rondevu_schemas
from rondevu_schemas._base import WireModel, WireRootModel

__all__ = ["DEFAULT_DIR", "exported_models", "main", "render", "schema_files"]

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "json"
"""``schemas/json/`` of the source tree."""

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def exported_models() -> dict[str, type[WireModel] | type[WireRootModel[Any]]]:
    """Every model of the public API (``rondevu_schemas.__all__``), by class name."""
    models: dict[str, type[WireModel] | type[WireRootModel[Any]]] = {}
    for name in rondevu_schemas.__all__:
        value = getattr(rondevu_schemas, name)
        is_model = isinstance(value, type) and issubclass(value, WireModel | WireRootModel)
        if is_model and value not in (WireModel, WireRootModel):
            models[name] = value
    return models


def render(model: type[WireModel] | type[WireRootModel[Any]]) -> str:
    """The file text of ``model``'s schema: sorted, indented, newline-terminated."""
    schema = {"$schema": _DIALECT, **model.model_json_schema(by_alias=True, mode="validation")}
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def schema_files() -> dict[str, str]:
    """File name -> text, for every exported model."""
    return {f"{name}.json": render(model) for name, model in sorted(exported_models().items())}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m rondevu_schemas.export",
        description="Write or check the JSON Schema files of the wire models.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any file differs"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help="the schema directory")
    args = parser.parse_args(argv)
    out: Path = args.out

    expected = schema_files()
    present = {path.name for path in out.glob("*.json")} if out.is_dir() else set()
    problems: list[str] = []
    for name, text in expected.items():
        path = out / name
        if name not in present:
            problems.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"stale: {path}")
    problems.extend(f"no model: {out / name}" for name in sorted(present - expected.keys()))

    if args.check:
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python -m rondevu_schemas.export", file=sys.stderr)
        return 1 if problems else 0

    out.mkdir(parents=True, exist_ok=True)
    for name in sorted(present - expected.keys()):
        (out / name).unlink()
    for name, text in expected.items():
        (out / name).write_text(text, encoding="utf-8", newline="\n")
    for problem in problems:
        print(f"fixed {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
