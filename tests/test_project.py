"""The project's promises about itself: README's commands, CI, packaging."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The indented shell commands of README.md, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if re.match(r"^    \S", line)]


def test_readme_has_demo_then_test_command() -> None:
    commands = readme_commands()
    assert commands[0].endswith("rondevu demo")
    assert "pytest" in commands[1]


def test_ci_runs_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_commands()[1] in ci.replace("\\\n    ", "")


def test_every_package_ships_py_typed() -> None:
    packages = [ROOT / "rondevu_core", *ROOT.glob("schemas/*/"), *ROOT.glob("drivers/*/")]
    packages = [p for p in packages if (p / "__init__.py").exists()]
    assert len(packages) >= 3
    for package in packages:
        assert (package / "py.typed").exists(), package


def test_wheel_lists_every_package() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for package in [*ROOT.glob("schemas/*/__init__.py"), *ROOT.glob("drivers/*/__init__.py")]:
        folder = package.parent.relative_to(ROOT).as_posix()
        assert f'"{folder}"' in pyproject, f"{folder} missing from the wheel's packages"
