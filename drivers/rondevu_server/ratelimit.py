"""Per-client token buckets with bounded memory (our answer to S10).

Each client key (an address) owns a bucket of ``burst`` tokens refilled at ``rate`` per
second; a request takes one token or is refused.  At most ``max_clients`` buckets exist:
the least recently seen client is forgotten first, which can only ever *help* a client
(a forgotten bucket comes back full), so memory stays bounded without hurting anyone
honest.  Time is passed in, in milliseconds, like everywhere else in the server.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets keyed by client; `allow` answers one request."""

    def __init__(self, *, rate: float, burst: int, max_clients: int) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be > 0, burst and max_clients >= 1")
        self._rate_per_ms = rate / 1000.0
        self._burst = float(burst)
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, client: str, now_ms: int) -> bool:
        """Take a token from ``client``'s bucket; False when it is empty."""
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            tokens = self._burst
            if len(self._buckets) >= self._max_clients:
                self._buckets.popitem(last=False)
        else:
            tokens, last = bucket
            tokens = min(self._burst, tokens + max(0, now_ms - last) * self._rate_per_ms)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[client] = (tokens, now_ms)
        return allowed
