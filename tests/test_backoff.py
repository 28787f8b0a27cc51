"""Reconnection backoff."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rondevu_core.rules.backoff import Backoff, BackoffPolicy, backoff_delay

policies = st.builds(
    BackoffPolicy,
    base_ms=st.integers(0, 100_000),
    max_ms=st.integers(0, 1_000_000),
    jitter=st.floats(0.0, 1.0),
    max_attempts=st.integers(0, 20),
)
units = st.floats(0.0, 1.0, exclude_max=True)


@given(policies, st.integers(0, 10_000), units)
def test_delay_stays_within_bounds(policy: BackoffPolicy, attempt: int, unit: float) -> None:
    delay = backoff_delay(policy, attempt, unit)
    assert 0 <= delay <= round(policy.max_ms * (1 + policy.jitter))


@given(policies, st.integers(0, 60))
def test_without_jitter_draw_the_delay_is_the_capped_doubling(
    policy: BackoffPolicy, attempt: int
) -> None:
    assert backoff_delay(policy, attempt, 0.5) == min(policy.base_ms * 2**attempt, policy.max_ms)


@given(policies, units)
def test_delays_grow_until_the_cap(policy: BackoffPolicy, unit: float) -> None:
    no_jitter = BackoffPolicy(
        base_ms=policy.base_ms, max_ms=policy.max_ms, jitter=0.0, max_attempts=0
    )
    delays = [backoff_delay(no_jitter, n, unit) for n in range(40)]
    assert delays == sorted(delays)
    assert delays[-1] == min(policy.max_ms, policy.base_ms * 2**39)


def test_defaults_are_the_client_defaults() -> None:
    policy = BackoffPolicy()
    assert (policy.base_ms, policy.max_ms, policy.jitter, policy.max_attempts) == (
        1000,
        30000,
        0.1,
        5,
    )
    assert [backoff_delay(policy, n, 0.5) for n in range(7)] == [
        1000,
        2000,
        4000,
        8000,
        16000,
        30000,
        30000,
    ]
    assert backoff_delay(policy, 0, 0.0) == 900
    assert backoff_delay(policy, 10, 1.0) == 33000


@pytest.mark.parametrize(
    "kwargs",
    [{"base_ms": -1}, {"max_ms": -1}, {"jitter": 1.5}, {"jitter": -0.1}, {"max_attempts": -1}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        BackoffPolicy(**kwargs)  # type: ignore[arg-type]


def test_delay_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(BackoffPolicy(), -1, 0.5)
    with pytest.raises(ValueError, match="unit_random"):
        backoff_delay(BackoffPolicy(), 0, 1.5)


def test_zero_max_attempts_means_unlimited() -> None:
    backoff = Backoff(BackoffPolicy(max_attempts=0))
    assert all(backoff.next_delay(0.5) is not None for _ in range(1000))
    assert not backoff.exhausted


class BackoffMachine(RuleBasedStateMachine):
    """A Backoff hands out exactly max_attempts delays per episode, reset starts over."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = BackoffPolicy(max_attempts=3, base_ms=10, max_ms=100, jitter=0.5)
        self.backoff = Backoff(self.policy)
        self.handed_out = 0

    @precondition(lambda self: not self.backoff.exhausted)
    @rule(unit=units)
    def next_delay(self, unit: float) -> None:
        delay = self.backoff.next_delay(unit)
        assert delay is not None
        assert delay == backoff_delay(self.policy, self.handed_out, unit)
        self.handed_out += 1

    @precondition(lambda self: self.backoff.exhausted)
    @rule(unit=units)
    def exhausted_gives_none(self, unit: float) -> None:
        assert self.backoff.next_delay(unit) is None

    @rule()
    def reset(self) -> None:
        self.backoff.reset()
        self.handed_out = 0

    @invariant()
    def counts_agree(self) -> None:
        assert self.backoff.attempt == self.handed_out <= 3
        assert self.backoff.exhausted == (self.handed_out == 3)


TestBackoffMachine = BackoffMachine.TestCase
