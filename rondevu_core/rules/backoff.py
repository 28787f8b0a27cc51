"""Exponential backoff with jitter for reconnection.

``delay(attempt) = round(max(0, capped ± jitter·capped))`` with
``capped = min(base·2^attempt, max)``, as in the 0.18.9 client.  The random draw is an
argument (a float in ``[0, 1)``), so the rule is pure and every delay lies in
``[0, max·(1+jitter)]``.  ``max_attempts == 0`` means "retry forever".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff", "BackoffPolicy", "backoff_delay"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffPolicy:
    """How reconnection attempts are spaced; the defaults are the 0.18.9 ones."""

    base_ms: int = 1000
    max_ms: int = 30000
    jitter: float = 0.1
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if self.base_ms < 0 or self.max_ms < 0:
            raise ValueError("backoff base and max must be >= 0 ms")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("backoff jitter must be within [0, 1]")
        if self.max_attempts < 0:
            raise ValueError("max_attempts must be >= 0 (0 means unlimited)")


def backoff_delay(policy: BackoffPolicy, attempt: int, unit_random: float) -> int:
    """The delay in ms before retry number ``attempt`` (0-based).

    ``unit_random`` is a uniform draw from ``[0, 1)``; 0.5 means no jitter.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if not 0.0 <= unit_random <= 1.0:
        raise ValueError("unit_random must be within [0, 1]")
    # Shifting by a huge attempt number would build a huge integer; past 62 doublings any
    # sane base is beyond any sane max.
    capped = policy.max_ms if attempt > 62 else min(policy.base_ms << attempt, policy.max_ms)
    offset = capped * policy.jitter * (2.0 * unit_random - 1.0)
    return max(0, round(capped + offset))


class Backoff:
    """The attempt counter of one reconnection episode.

    `next_delay` hands out delays until ``max_attempts`` is reached, then None; `reset`
    starts over after a successful connection.
    """

    __slots__ = ("_attempt", "policy")

    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many delays have been handed out since the last reset."""
        return self._attempt

    @property
    def exhausted(self) -> bool:
        """True when no further attempt is allowed."""
        limit = self.policy.max_attempts
        return limit != 0 and self._attempt >= limit

    def next_delay(self, unit_random: float) -> int | None:
        """The next delay in ms, or None when attempts are exhausted."""
        if self.exhausted:
            return None
        delay = backoff_delay(self.policy, self._attempt, unit_random)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        """Forget past attempts (after a successful reconnection)."""
        self._attempt = 0
