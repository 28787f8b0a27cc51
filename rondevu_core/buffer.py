"""A bounded FIFO of messages sent while a connection is down.

Invariants: order is preserved; at most ``max_size`` messages are held; when full, the
*oldest* message is evicted and the new one is stored (the original drops the new one
too, losing two messages: B15); every message that leaves without being delivered -
evicted or expired - is reported to the caller, so nothing disappears silently.
Time comes in as ``now`` (ms); the buffer never reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["BufferedMessage", "MessageBuffer", "Payload"]

Payload = str | bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class BufferedMessage:
    """One held message: ``seq`` is unique and increasing within one buffer."""

    seq: int
    data: Payload
    buffered_at: int


class MessageBuffer:
    """FIFO of `BufferedMessage` bounded in count and age."""

    __slots__ = ("_items", "_next_seq", "max_age_ms", "max_size")

    def __init__(self, *, max_size: int, max_age_ms: int) -> None:
        if max_size < 0:
            raise ValueError("max_size must be >= 0")
        if max_age_ms < 0:
            raise ValueError("max_age_ms must be >= 0")
        self.max_size = max_size
        self.max_age_ms = max_age_ms
        self._items: deque[BufferedMessage] = deque()
        self._next_seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[BufferedMessage]:
        return iter(tuple(self._items))

    def add(self, data: Payload, now: int) -> tuple[BufferedMessage, list[BufferedMessage]]:
        """Store ``data``; return the stored message and those evicted to make room.

        With ``max_size == 0`` nothing can be held: the new message itself is returned
        as evicted.
        """
        message = BufferedMessage(seq=self._next_seq, data=data, buffered_at=now)
        self._next_seq += 1
        if self.max_size == 0:
            return message, [message]
        evicted: list[BufferedMessage] = []
        while len(self._items) >= self.max_size:
            evicted.append(self._items.popleft())
        self._items.append(message)
        return message, evicted

    def is_expired(self, message: BufferedMessage, now: int) -> bool:
        """True when ``message`` is older than ``max_age_ms`` at ``now``."""
        return now - message.buffered_at > self.max_age_ms

    def expire(self, now: int) -> list[BufferedMessage]:
        """Remove and return every message older than ``max_age_ms``, oldest first."""
        expired = [m for m in self._items if self.is_expired(m, now)]
        if expired:
            self._items = deque(m for m in self._items if not self.is_expired(m, now))
        return expired

    def drain(self, now: int) -> tuple[list[BufferedMessage], list[BufferedMessage]]:
        """Empty the buffer: ``(fresh messages to replay in order, expired ones)``."""
        expired = self.expire(now)
        fresh = list(self._items)
        self._items.clear()
        return fresh, expired

    def clear(self) -> list[BufferedMessage]:
        """Empty the buffer and return what it held, oldest first."""
        held = list(self._items)
        self._items.clear()
        return held
