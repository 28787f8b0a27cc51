"""The pure server rules of rondevu_core.rules.server_params, checked with hypothesis."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rondevu_core.errors import ValidationError
from rondevu_core.rules.server_params import (
    ERR_CALL_MISMATCH,
    MAX_SINCE,
    check_call_binding,
    clamp_page,
    clamp_ttl,
    coerce_since,
    json_depth,
    next_ice_timestamps,
)
from rondevu_core.rules.signing import build_message, expected_context, parse_auth_message
from rondevu_server.methods import METHODS as SERVER_METHODS
from rondevu_server.ratelimit import RateLimiter

numbers = st.one_of(st.integers(-(10**15), 10**15), st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200)
@given(ttl=numbers | st.text(max_size=3) | st.none())
def test_ttl_always_within_bounds(ttl: Any) -> None:
    value = clamp_ttl(ttl, default=60_000, minimum=60_000, maximum=86_400_000)
    assert 60_000 <= value <= 86_400_000
    assert clamp_ttl(None, default=70_000, minimum=60_000, maximum=86_400_000) == 70_000


def test_ttl_examples() -> None:
    limits = {"default": 60_000, "minimum": 60_000, "maximum": 86_400_000}
    assert clamp_ttl(1000, **limits) == 60_000
    assert clamp_ttl(300_000, **limits) == 300_000
    assert clamp_ttl(10**13, **limits) == 86_400_000
    assert clamp_ttl(True, **limits) == 60_000


@settings(max_examples=200)
@given(limit=numbers | st.none() | st.text(max_size=2), offset=numbers | st.none())
def test_page_always_clamped(limit: Any, offset: Any) -> None:
    page, skip = clamp_page(limit, offset)
    assert 1 <= page <= 100
    assert skip >= 0


@settings(max_examples=200)
@given(since=numbers | st.none() | st.booleans() | st.text(max_size=2))
def test_since_is_a_non_negative_int(since: Any) -> None:
    value = coerce_since(since)
    assert isinstance(value, int)
    assert 0 <= value <= MAX_SINCE


@settings(max_examples=200)
@given(since=st.integers(min_value=1, max_value=2**70) | st.floats(min_value=1, max_value=1e300))
def test_since_fits_storage_integers_and_keeps_its_meaning(since: Any) -> None:
    value = coerce_since(since)
    assert value < 2**63  # SQLite and PostgreSQL bigint hold it
    assert value == min(int(since), MAX_SINCE)


@settings(max_examples=200)
@given(
    requests=st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(1, 100)), min_size=1, max_size=20
    )
)
def test_ice_timestamps_strictly_increase_per_offer(requests: list[tuple[int, int]]) -> None:
    """Whatever the clock does between requests, a since cursor never skips (B5)."""
    last: int | None = None
    seen: list[int] = []
    for now, count in requests:
        stamps = next_ice_timestamps(last, now, count)
        assert len(stamps) == count
        assert stamps[0] >= now
        seen.extend(stamps)
        last = stamps[-1]
    assert seen == sorted(set(seen))


@settings(max_examples=200)
@given(value=json_values, limit=st.integers(0, 8))
def test_json_depth_matches_recursive_definition(value: Any, limit: int) -> None:
    def depth(item: Any) -> int:
        if isinstance(item, dict):
            return 1 + max((depth(v) for v in item.values()), default=0)
        if isinstance(item, list):
            return 1 + max((depth(v) for v in item), default=0)
        return 0

    expected = depth(value)
    measured = json_depth(value, limit)
    assert measured == (expected if expected <= limit else limit + 1)


def test_json_depth_handles_huge_nesting() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    assert json_depth(value, 10) == 11
    assert json_depth(json.loads("[[{}]]"), 10) == 3


METHODS = list(SERVER_METHODS)  # the nine method names
params_strategy = st.fixed_dictionaries(
    {},
    optional={
        "serviceFqn": st.sampled_from(["chat:1.0.0@alice", "x:2.0.0"]),
        "offerId": st.sampled_from(["a" * 64, "b" * 64]),
        "since": st.integers(0, 10**13) | st.floats(0, 1e13),
        "username": st.sampled_from(["alice", "bob"]),
    },
)


@settings(max_examples=300)
@given(
    signed_method=st.sampled_from(METHODS),
    called_method=st.sampled_from(METHODS),
    signed_params=params_strategy,
    called_params=params_strategy,
)
def test_binding_accepts_exactly_the_honest_message(
    signed_method: str,
    called_method: str,
    signed_params: dict[str, Any],
    called_params: dict[str, Any],
) -> None:
    message = build_message(
        signed_method, "alice", expected_context(signed_method, signed_params), 1_765_700_000_000
    )
    auth = parse_auth_message(message)
    honest = signed_method == called_method and expected_context(
        signed_method, signed_params
    ) == expected_context(called_method, called_params)
    if honest:
        check_call_binding(auth, called_method, called_params)
    else:
        with pytest.raises(ValidationError, match=ERR_CALL_MISMATCH):
            check_call_binding(auth, called_method, called_params)


@settings(max_examples=100)
@given(steps=st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 500)), max_size=60))
def test_rate_limiter_bounds_memory_and_rate(steps: list[tuple[str, int]]) -> None:
    limiter = RateLimiter(rate=2.0, burst=3, max_clients=4)
    now = 0
    allowed: dict[str, list[int]] = {}
    for client, gap in steps:
        now += gap
        if limiter.allow(client, now):
            allowed.setdefault(client, []).append(now)
        assert len(limiter) <= 4
    for times in allowed.values():
        # never more than burst + rate * elapsed (forgetting a client only refills it)
        for i, start in enumerate(times):
            window = [t for t in times[i:] if t - start <= 1000]
            assert len(window) <= 3 + 2 + 1


@settings(max_examples=150)
@given(steps=st.lists(st.tuples(st.integers(1, 150), st.integers(0, 300)), min_size=1, max_size=60))
def test_rate_limiter_counts_every_call_of_a_batch(steps: list[tuple[int, int]]) -> None:
    """Granted calls never exceed burst + rate x elapsed (plus the debt one batch bigger
    than the burst may run up); a refusal takes no tokens."""
    rate, burst = 50.0, 100
    limiter = RateLimiter(rate=rate, burst=burst, max_clients=1)
    now = 0
    granted: list[tuple[int, int]] = []
    for cost, gap in steps:
        now += gap
        if limiter.allow("c", now, cost):
            granted.append((now, cost))
        elif cost > 1 and limiter.allow("c", now, 1):  # the refusal took nothing
            granted.append((now, 1))
    for i, (start, _) in enumerate(granted):
        for end, _ in granted[i:]:
            spent = sum(c for t, c in granted if start <= t <= end)
            debt = max(0, max(c for _, c in granted) - burst)
            assert spent <= burst + debt + rate * (end - start) / 1000 + 1e-6


def test_rate_limiter_batch_bigger_than_the_burst_runs_into_debt() -> None:
    limiter = RateLimiter(rate=1.0, burst=10, max_clients=1)
    assert limiter.allow("c", 0, 30)  # a full bucket lets it through: 20 tokens of debt
    assert not limiter.allow("c", 20_000, 1)  # 20 s repaid the debt, nothing more
    assert limiter.allow("c", 21_000, 1)
    assert not limiter.allow("c", 26_000, 10)  # 5 tokens back, 10 needed: refused...
    assert limiter.allow("c", 26_000, 5)  # ...and nothing was taken by the refusal
