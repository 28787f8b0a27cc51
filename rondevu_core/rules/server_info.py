"""What a server says about itself in ``GET /``, and what the client makes of it.

Our server lists the extensions it speaks under ``extensions`` (docs/long-polling.md);
server 0.5.4 sends no such field.  The driver fetches ``GET /`` once and hands the
parsed body here; the decision of whether and how long to let the server hold calls is
made here, so every driver decides alike:

- no ``extensions.longPoll.maxWaitMs`` (0.5.4, or ours with long polling off), or one
  that is not a positive whole number: 0, the machines poll as the original does;
- otherwise the advertised limit, but never more than `LONG_POLL_CAP_MS`, and at least
  `LONG_POLL_TIMEOUT_MARGIN_MS` under the client's own request timeout, so a held call
  always comes back before the client gives up on it; under `LONG_POLL_MIN_MS` it is
  not worth holding (0).

Pure: no I/O, the body arrives as parsed JSON.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "LONG_POLL_CAP_MS",
    "LONG_POLL_MIN_MS",
    "LONG_POLL_TIMEOUT_MARGIN_MS",
    "advertised_long_poll_ms",
    "long_poll_wait_ms",
]

LONG_POLL_CAP_MS = 25_000
"""The longest ``waitMs`` the client asks for, whatever the server allows."""
LONG_POLL_TIMEOUT_MARGIN_MS = 5_000
"""A held call's ``waitMs`` stays this far under the client's request timeout."""
LONG_POLL_MIN_MS = 1_000
"""A shorter hold saves nothing over plain polling; the client does not ask for it."""


def advertised_long_poll_ms(body: object) -> int:
    """``extensions.longPoll.maxWaitMs`` of a ``GET /`` body, or 0 when absent or malformed."""
    if not isinstance(body, Mapping):
        return 0
    extensions = body.get("extensions")
    if not isinstance(extensions, Mapping):
        return 0
    long_poll = extensions.get("longPoll")
    if not isinstance(long_poll, Mapping):
        return 0
    value = long_poll.get("maxWaitMs")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return 0
    return value


def long_poll_wait_ms(body: object, *, request_timeout_ms: int) -> int:
    """The ``waitMs`` this client sends with held calls to the server whose ``GET /``
    body is ``body``; 0 means plain polling (see the module docstring)."""
    wait = min(
        advertised_long_poll_ms(body),
        LONG_POLL_CAP_MS,
        request_timeout_ms - LONG_POLL_TIMEOUT_MARGIN_MS,
    )
    return wait if wait >= LONG_POLL_MIN_MS else 0
