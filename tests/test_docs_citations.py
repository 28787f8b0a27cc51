"""Code comments cite the protocol by the sections of docs/protocol.md (``§7.3``): every
section a comment names exists there, and no comment names a file the repository does
not hold (the reference the project was first written from is not part of it)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE_FOLDERS = ("rondevu_core", "schemas", "drivers", "tests", "fuzz", "bench", "examples")
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.M)
CITATION = re.compile(r"§ ?(\d+(?:\.\d+)?)")
THIS_FILE = Path(__file__).resolve()


def _sources() -> list[Path]:
    return [
        path
        for folder in CODE_FOLDERS
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.resolve() != THIS_FILE
    ]


def test_every_cited_section_is_a_section_of_the_protocol_page() -> None:
    page = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    sections = set(HEADING.findall(page))
    assert {"2", "7", "7.3", "13"} <= sections  # the pattern reads the page's headings
    unknown = [
        f"{path.relative_to(ROOT)}: §{number}"
        for path in _sources()
        for number in CITATION.findall(path.read_text(encoding="utf-8"))
        if number not in sections
    ]
    assert unknown == []


def test_no_source_cites_a_file_outside_the_repository() -> None:
    allowed = {"test_readme.py", "test_docstrings.py"}  # they check that it is absent
    citing = [
        str(path.relative_to(ROOT))
        for path in _sources()
        if path.name not in allowed and "PROTOCOL.md" in path.read_text(encoding="utf-8")
    ]
    assert citing == []
