"""Parity with JavaScript, the language of the original client and server.

Where the protocol leans on a JavaScript built-in (``parseInt`` for timestamps,
``Number.toString(36)`` for anonymous names, ``JSON.stringify`` inside offer ids,
``String.length`` for length limits), hypothesis generates batches of inputs and Node
computes the reference answers in one process per batch.  Skipped when Node is absent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rondevu_core.rules.offer_id import offer_id_for_sdp
from rondevu_core.rules.signing import js_number_to_string, js_parse_int
from rondevu_core.rules.usernames import js_length, to_base36

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

SCRIPT = r"""
const crypto = require('crypto');
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = input.items.map((x) => {
  switch (input.op) {
    case 'parseInt': { const v = parseInt(x); return Number.isNaN(v) ? null : String(v); }
    case 'base36': return Number(x).toString(36);
    case 'offerId': return crypto.createHash('sha256')
        .update(JSON.stringify({sdp: x}), 'utf8').digest('hex');
    case 'length': return x.length;
    case 'String': return String(x);
  }
});
process.stdout.write(JSON.stringify(out));
"""
batch = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def node(op: str, items: list[Any]) -> list[Any]:
    assert NODE is not None
    done = subprocess.run(
        [NODE, "-e", SCRIPT],
        input=json.dumps({"op": op, "items": items}),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: list[Any] = json.loads(done.stdout)
    return result


timestamp_like = st.one_of(
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
    st.text(alphabet="0123456789xXabcdefg+- \t\u00a0\u200b", max_size=12),
    st.builds(lambda n, junk: f"{n}{junk}", st.integers(0, 2**45), st.text(max_size=4)),
)


@batch
@given(st.lists(timestamp_like, min_size=100, max_size=100))
def test_parse_int_matches_javascript(texts: list[str]) -> None:
    expected = node("parseInt", texts)
    got = [None if (v := js_parse_int(t)) is None else str(v) for t in texts]
    assert got == expected


@batch
@given(st.lists(st.integers(min_value=0, max_value=2**53 - 1), min_size=100, max_size=100))
def test_base36_matches_javascript(numbers: list[int]) -> None:
    assert [to_base36(n) for n in numbers] == node("base36", numbers)


# Text without lone surrogates: those cannot cross the JSON pipe to Node unchanged.
sdp_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)


@batch
@given(st.lists(sdp_text, min_size=50, max_size=50))
def test_offer_id_matches_javascript(sdps: list[str]) -> None:
    assert [offer_id_for_sdp(s) for s in sdps] == node("offerId", sdps)


@batch
@given(st.lists(sdp_text, min_size=50, max_size=50))
def test_string_length_matches_javascript(texts: list[str]) -> None:
    assert [js_length(t) for t in texts] == node("length", texts)


json_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(2**60), max_value=2**60).map(float),
    st.sampled_from([1e21, 1e-6, 1e-7, 123e-20, 2.0**53, 2.0**53 + 2, 0.1, -0.0]),
)


@batch
@given(st.lists(json_numbers, min_size=100, max_size=100))
def test_number_to_string_matches_javascript(numbers: list[float | int]) -> None:
    """The signed context spells numbers as JavaScript's String() does (§4)."""
    assert [js_number_to_string(n) for n in numbers] == node("String", numbers)


def test_offer_id_documented_example() -> None:
    sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    expected = "48e69901419976866d277c009a637dc035e8b1fcc56c37c241642bc3c3dffa1b"
    assert offer_id_for_sdp(sdp) == expected
    assert node("offerId", [sdp]) == [expected]


def test_offer_id_hashes_escaped_lone_surrogates_like_javascript() -> None:
    # JSON.stringify writes a lone surrogate as the escape \udc80; so do we.
    payload = b'{"sdp":"a\\udc80"}'
    assert offer_id_for_sdp("a\udc80") == hashlib.sha256(payload).hexdigest()
