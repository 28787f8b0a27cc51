"""``schemas/json/`` is exactly the JSON Schema of every wire model, and stays so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import rondevu_schemas
from rondevu_schemas import WireModel, WireRootModel
from rondevu_schemas.export import DEFAULT_DIR, exported_models, main, schema_files

ROOT = Path(__file__).resolve().parent.parent


def defined_models() -> set[type[Any]]:
    """Every concrete model class defined in rondevu_schemas (parametrised bases excluded)."""
    found: set[type[Any]] = set()
    pending: list[type[Any]] = [WireModel, WireRootModel]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            pending.append(sub)
            if sub.__module__.startswith("rondevu_schemas.") and "[" not in sub.__name__:
                found.add(sub)
    return found


def test_default_dir_is_the_source_tree() -> None:
    assert DEFAULT_DIR == ROOT / "schemas" / "json"


def test_every_file_matches_its_model() -> None:
    expected = schema_files()
    on_disk = {path.name for path in DEFAULT_DIR.glob("*.json")}
    assert sorted(on_disk - expected.keys()) == [], "files without a model"
    assert sorted(expected.keys() - on_disk) == [], "models without a file"
    for name, text in expected.items():
        assert (DEFAULT_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} drifted from its model: run python -m rondevu_schemas.export"
        )


def test_every_model_is_public_and_exported() -> None:
    exported = set(exported_models().values())
    missing = {cls.__name__ for cls in defined_models() - exported}
    assert missing == set()
    for name, model in exported_models().items():
        assert model.__name__ == name
        assert name in rondevu_schemas.__all__


def test_files_are_sorted_pretty_json_with_trailing_newline() -> None:
    for path in DEFAULT_DIR.glob("*.json"):
        text = path.read_text(encoding="utf-8")
        schema = json.loads(text)
        assert text == json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        assert schema["title"] == path.stem
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_check_reports_every_kind_of_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--check", "--out", str(tmp_path)]) == 1  # empty: all missing
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--check", "--out", str(tmp_path)]) == 0

    stale = tmp_path / "RpcCall.json"
    stale.write_text(stale.read_text(encoding="utf-8").replace("method", "verb"), "utf-8")
    (tmp_path / "PollResult.json").unlink()
    (tmp_path / "Orphan.json").write_text("{}\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"stale: {stale}" in err
    assert f"missing: {tmp_path / 'PollResult.json'}" in err
    assert f"no model: {tmp_path / 'Orphan.json'}" in err
    assert stale.read_text(encoding="utf-8").count("verb") > 0  # --check wrote nothing

    assert main(["--out", str(tmp_path)]) == 0
    assert not (tmp_path / "Orphan.json").exists()
    assert main(["--check", "--out", str(tmp_path)]) == 0


def test_module_entry_point_checks_the_tree() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rondevu_schemas.export", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
