"""The offer pool's states, deadlines and constants: data only."""

from __future__ import annotations

from enum import Enum

from rondevu_core.connection import State
from rondevu_core.rules.backoff import BackoffPolicy

__all__ = ["LOOK_INTERVAL_HELD_MS", "PUBLISH_RETRY", "RESUMING", "PoolState", "Timer"]


class PoolState(Enum):
    """IDLE (not filling), FILLING (publishing and polling), CLOSED (for good)."""

    IDLE = "idle"
    FILLING = "filling"
    CLOSED = "closed"


class Timer(Enum):
    """The pool's own deadlines, each a trigger of its transition table.

    ``CONNECTIONS`` is not a deadline of its own: it stands for whatever falls due in
    the pool's connections, which `OfferPool.handle_timer` runs after its own."""

    POLL = "poll"
    REFRESH = "refresh"
    PUBLISH_RETRY = "publish_retry"
    CHECK = "check"
    CONNECTIONS = "connections"


LOOK_INTERVAL_HELD_MS = 60_000
"""How often a pool whose polls are held looks its own service up (`OfferPool`)."""

PUBLISH_RETRY = BackoffPolicy(base_ms=1000, max_ms=30000, jitter=0.1, max_attempts=0)
"""How a failed publishService is retried: for ever, backing off to 30 s."""

RESUMING = frozenset({State.SIGNALING, State.CHECKING, State.CONNECTING})
"""States of an announced connection that is again in a handshake (`resume_with`)."""
