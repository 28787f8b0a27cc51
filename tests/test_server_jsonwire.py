"""The server's JSON layer: orjson on the hot path, the stdlib for what orjson refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rondevu_server.jsonwire import RawJson, dumps, parse_body, to_text

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def _stdlib(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@settings(max_examples=150)
@given(values)
def test_dumps_is_compact_json_and_parses_back(value: Any) -> None:
    text = json.dumps(value)
    if "\\ud8" in text.lower() or "\\udc" in text.lower():  # lone surrogates
        return
    assert dumps(value) == _stdlib(value)
    assert parse_body(dumps(value)) == value


@settings(max_examples=100)
@given(values, values)
def test_raw_json_is_spliced_verbatim(outer: Any, inner: Any) -> None:
    raw = RawJson(to_text(inner))
    wrapped = {"a": outer, "candidate": raw, "list": [raw]}
    assert json.loads(dumps(wrapped)) == json.loads(
        json.dumps({"a": outer, "candidate": inner, "list": [inner]})
    )


def test_stdlib_takes_over_what_orjson_refuses() -> None:
    # An integer beyond 64 bits next to a RawJson: the fallback still splices it.
    assert (
        dumps({"n": 2**70, "c": RawJson('{"x":1}')}) == b'{"n":1180591620717411303424,"c":{"x":1}}'
    )
    # A lone surrogate is escaped, as JSON.stringify does.
    assert dumps("\ud800") == b'"\\ud800"'
    # Bodies orjson refuses: BOM, invalid UTF-8, lone surrogate escapes.
    assert parse_body(b'\xef\xbb\xbf{"a":1}') == {"a": 1}
    assert parse_body(b'{"a":"\xff"}') == {"a": "\ufffd"}
    assert parse_body(b'{"a":"\\ud800x"}') == {"a": "\ufffdx"}
    # Numbers are doubles, as JSON.parse reads them; one beyond a double is refused
    # by orjson and read by the stdlib as infinity, which is written back as null.
    assert parse_body(b"[12345678901234567890123]") == [1.2345678901234568e22]
    assert dumps(parse_body(b"[1e400]")) == b"[null]"


@pytest.mark.parametrize("body", [b"", b"{", b"NaN", b'{"a":Infinity}', b"[1,]", b"\x00"])
def test_not_json_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"Expecting|is not JSON"):
        parse_body(body)
