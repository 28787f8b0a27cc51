"""JSON in and out of the server, as a JavaScript server reads and writes it (§2, §3).

The hot path uses orjson (several times faster than the stdlib on both sides); the
stdlib handles what orjson refuses, so the bytes on the wire never depend on which one
ran except for number formatting, which JSON leaves free:

- `parse_body`: orjson first (numbers beyond 64-bit integers become doubles, as in
  ``JSON.parse``); on any refusal (a byte-order mark, invalid UTF-8, a lone
  ``\\udXXX`` surrogate escape, a number beyond a double...) the stdlib parses the text
  as ``JSON.parse`` would, lone surrogates become U+FFFD, and ``NaN``/``Infinity`` stay
  refused.  So no string a handler sees can ever be unencodable.
- `dumps`: compact UTF-8 like ``JSON.stringify``; the stdlib takes over for integers
  beyond 64 bits (which only the stdlib parser produces) and lone surrogates; an
  infinity (``1e400``) is written as ``null``, as ``JSON.stringify`` does.
- `RawJson`: JSON text we wrote ourselves (stored ICE candidates), spliced into a reply
  as is instead of being parsed and encoded again.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["RawJson", "dumps", "parse_body", "to_text"]

_LONE_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class RawJson:
    """A JSON text written by `to_text`, emitted verbatim by `dumps`."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _fragment(value: Any) -> Any:
    if isinstance(value, RawJson):
        return orjson.Fragment(value.text)
    raise TypeError(type(value).__name__)


def _parsed(value: Any) -> Any:
    if isinstance(value, RawJson):
        return json.loads(value.text)
    raise TypeError(type(value).__name__)


def dumps(value: Any) -> bytes:
    """Compact JSON as JavaScript's ``JSON.stringify`` writes it, as UTF-8 bytes."""
    try:
        return orjson.dumps(value, default=_fragment)
    except TypeError:  # an int beyond 64 bits, or a lone surrogate
        pass
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_parsed)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape it, as JSON.stringify does
        return json.dumps(value, separators=(",", ":"), default=_parsed).encode("ascii")


def to_text(value: Any) -> str:
    """`dumps` as a str (what `RawJson` later emits)."""
    return dumps(value).decode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # JSON.parse refuses NaN and Infinity too


def _scrub(value: Any) -> Any:
    """Replace lone surrogates (from ``\\udXXX`` escapes) by U+FFFD, as a JS server would
    store them, so no database driver ever meets an unencodable string."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, dict):
        return {_scrub(key): _scrub(item) for key, item in value.items()}
    return value


def parse_body(body: bytes) -> Any:
    """The JSON value of a request body; ValueError or RecursionError when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    text = body.decode("utf-8", "replace").lstrip("\ufeff")
    value = json.loads(text, parse_constant=_reject_constant)
    if _LONE_SURROGATE_ESCAPE.search(body):
        value = _scrub(value)
    return value
