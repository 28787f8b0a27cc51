"""Pure rules a signaling server applies to a call's parameters (docs/protocol.md §4, §7, §9).

These decide numbers and yes/no answers only; storage and transport live in
``rondevu_server``.  Each rule reproduces the 0.5.4 server where its behaviour is sound
(TTL clamping, page clamping, ``since`` coercion) and hardens it where the original is not
(docs/compatibility.md):

- `check_call_binding` ties a signature to the call it authorises (S1 in part): the
  method named in the signed message must be the method called, and the signed context
  must be the one an honest client derives from the params.  Honest 0.18.x clients
  always sign exactly that, so they never notice.
- `next_ice_timestamps` keeps ICE ``createdAt`` strictly increasing per offer (B5/S8),
  so a ``since`` cursor set to the largest value seen never skips a later candidate.
- `json_depth` measures nesting without recursion, so a hostile candidate cannot
  exhaust the stack while being measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rondevu_core.errors import ValidationError
from rondevu_core.rules.signing import AuthMessage, expected_context

__all__ = [
    "ERR_CALL_MISMATCH",
    "MAX_SINCE",
    "PAGE_LIMIT_MAX",
    "check_call_binding",
    "clamp_page",
    "clamp_ttl",
    "coerce_since",
    "js_number",
    "json_depth",
    "next_ice_timestamps",
]

ERR_CALL_MISMATCH = "Signed message does not match this call"

PAGE_LIMIT_MAX = 100


def js_number(value: object) -> float | None:
    """The finite number a JSON value stands for in arithmetic, or None.

    Booleans and strings are not numbers here: the client always sends JSON numbers, and
    accepting ``"5"`` would only widen what an attacker can probe.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def clamp_ttl(ttl: object, *, default: int, minimum: int, maximum: int) -> int:
    """The offer lifetime in ms: ``ttl`` clamped to ``[minimum, maximum]`` (§7.2).

    An absent or non-numeric ``ttl`` gives ``default`` (the original turns a non-number
    into NaN and stores a broken expiry; we refuse to).
    """
    number = js_number(ttl)
    if number is None:
        return default
    return int(min(max(math.floor(number), minimum), maximum))


def clamp_page(limit: object, offset: object) -> tuple[int, int]:
    """``limit`` clamped to ``[1, 100]`` and ``offset`` to ``>= 0`` (§7.3, paginated).

    Non-numeric values fall back to the client's defaults (limit 10, offset 0).
    """
    limit_number = js_number(limit)
    offset_number = js_number(offset)
    page = 10 if limit_number is None else int(min(max(math.floor(limit_number), 1), 100))
    skip = 0 if offset_number is None else int(max(math.floor(offset_number), 0))
    return page, skip


MAX_SINCE = 2**53 - 1
"""The largest ``since`` kept as sent: JavaScript's largest exact integer, far past any
timestamp, so clamping to it changes no answer - and a storage integer always holds it."""


def coerce_since(since: object) -> int:
    """A ``since`` cursor as an integer ms value in ``[0, MAX_SINCE]``; any falsy or
    non-numeric value is 0 (§7.7).  Larger values (``1e30``, ``2**64``) mean "after every
    timestamp" and become `MAX_SINCE`, which SQL integer columns can compare against."""
    number = js_number(since)
    if number is None or number <= 0:
        return 0
    return min(math.floor(number), MAX_SINCE)


def check_call_binding(auth: AuthMessage, method: str, params: Mapping[str, object]) -> None:
    """Raise `ValidationError` unless ``auth`` was signed for this very call.

    The signed method must equal ``method`` and the signed context must equal the one
    `expected_context` derives from ``params`` (None, i.e. no context, for ``poll``).
    """
    if auth.method != method or auth.context != expected_context(method, params):
        raise ValidationError(ERR_CALL_MISMATCH)


def next_ice_timestamps(last: int | None, now: int, count: int) -> list[int]:
    """``count`` ICE ``createdAt`` values for one offer, each strictly after ``last``.

    The first is ``max(now, last + 1)`` and each next one adds 1 ms, so the sequence per
    offer never repeats or goes backwards, whatever the request order or clock.
    """
    start = now if last is None else max(now, last + 1)
    return list(range(start, start + count))


def json_depth(value: object, limit: int) -> int:
    """Nesting depth of a JSON value (a scalar is 0, ``{}`` or ``[]`` is 1).

    Stops counting once ``limit`` is exceeded and returns ``limit + 1``; iterative, so
    it is safe on any input the JSON parser accepted.
    """
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return limit + 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest
