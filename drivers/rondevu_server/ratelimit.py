"""Per-client token buckets with bounded memory (our answer to S10).

Each client key (an address) owns a bucket of ``burst`` tokens refilled at ``rate`` per
second; a call takes one token (a batch one per call) or is refused.  At most
``max_clients`` buckets exist: the least recently seen client is forgotten first, which
can only ever *help* a client (a forgotten bucket comes back full), so memory stays
bounded without hurting anyone honest.  Time is passed in, in milliseconds, like
everywhere else in the server.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets keyed by client; `allow` answers one request of ``cost`` calls."""

    def __init__(self, *, rate: float, burst: int, max_clients: int) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be > 0, burst and max_clients >= 1")
        self._rate_per_ms = rate / 1000.0
        self._burst = float(burst)
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, client: str, now_ms: int, cost: int = 1) -> bool:
        """Take ``cost`` tokens from ``client``'s bucket; False (taking none) when it holds
        fewer.  A cost above ``burst`` needs a full bucket and leaves it in debt, so the
        sustained rate still holds: the client waits until the debt is paid back.
        ``cost=0`` takes nothing: it is False while the bucket holds less than one token."""
        cost_tokens = float(max(cost, 0))
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            tokens = self._burst
            if len(self._buckets) >= self._max_clients:
                self._buckets.popitem(last=False)
        else:
            tokens, last = bucket
            tokens = min(self._burst, tokens + max(0, now_ms - last) * self._rate_per_ms)
        allowed = tokens >= min(max(cost_tokens, 1.0), self._burst)
        if allowed:
            tokens -= cost_tokens
        self._buckets[client] = (tokens, now_ms)
        return allowed
