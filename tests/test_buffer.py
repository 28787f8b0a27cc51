"""The message buffer (B15 is the original's overflow bug)."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from rondevu_core.buffer import BufferedMessage, MessageBuffer


def test_overflow_evicts_the_oldest_and_keeps_the_newest() -> None:
    buffer = MessageBuffer(max_size=2, max_age_ms=1000)
    buffer.add("a", 0)
    buffer.add("b", 1)
    stored, evicted = buffer.add("c", 2)
    assert [m.data for m in evicted] == ["a"]
    assert stored.data == "c"
    assert [m.data for m in buffer] == ["b", "c"]  # the original also lost "c" (B15)


def test_zero_capacity_reports_every_message_as_evicted() -> None:
    buffer = MessageBuffer(max_size=0, max_age_ms=1000)
    stored, evicted = buffer.add(b"x", 0)
    assert evicted == [stored]
    assert len(buffer) == 0


def test_drain_splits_fresh_from_expired_in_order() -> None:
    buffer = MessageBuffer(max_size=10, max_age_ms=100)
    for i, now in enumerate([0, 50, 100, 150]):
        buffer.add(str(i), now)
    fresh, expired = buffer.drain(now=200)
    assert [m.data for m in expired] == ["0", "1"]
    assert [m.data for m in fresh] == ["2", "3"]  # age exactly max_age is still fresh
    assert len(buffer) == 0


def test_bytes_and_text_are_kept_apart() -> None:
    buffer = MessageBuffer(max_size=4, max_age_ms=10)
    buffer.add("x", 0)
    buffer.add(b"x", 0)
    assert [type(m.data) for m in buffer.clear()] == [str, bytes]


def test_rejects_negative_limits() -> None:
    with pytest.raises(ValueError, match="max_size"):
        MessageBuffer(max_size=-1, max_age_ms=0)
    with pytest.raises(ValueError, match="max_age_ms"):
        MessageBuffer(max_size=1, max_age_ms=-1)


class BufferMachine(RuleBasedStateMachine):
    """Every added message leaves exactly once: delivered, evicted or expired; FIFO."""

    @initialize(size=st.integers(0, 5), age=st.integers(0, 50))
    def setup(self, size: int, age: int) -> None:
        self.buffer = MessageBuffer(max_size=size, max_age_ms=age)
        self.now = 0
        self.added: list[BufferedMessage] = []
        self.gone: list[BufferedMessage] = []  # delivered, evicted or expired

    @rule(data=st.one_of(st.text(max_size=3), st.binary(max_size=3)))
    def add(self, data: str | bytes) -> None:
        stored, evicted = self.buffer.add(data, self.now)
        assert stored.data == data
        assert stored.buffered_at == self.now
        self.added.append(stored)
        self.gone += evicted

    @rule(step=st.integers(0, 30))
    def tick(self, step: int) -> None:
        self.now += step

    @rule()
    def expire(self) -> None:
        expired = self.buffer.expire(self.now)
        assert all(self.now - m.buffered_at > self.buffer.max_age_ms for m in expired)
        self.gone += expired

    @rule()
    def drain(self) -> None:
        fresh, expired = self.buffer.drain(self.now)
        assert all(self.now - m.buffered_at <= self.buffer.max_age_ms for m in fresh)
        assert [m.seq for m in fresh] == sorted(m.seq for m in fresh)
        self.gone += expired + fresh

    @invariant()
    def bounded(self) -> None:
        assert len(self.buffer) <= self.buffer.max_size

    @invariant()
    def fifo(self) -> None:
        seqs = [m.seq for m in self.buffer]
        assert seqs == sorted(seqs)

    @invariant()
    def nothing_lost_nothing_twice(self) -> None:
        held = list(self.buffer)
        assert sorted(m.seq for m in held + self.gone) == [m.seq for m in self.added]


TestBufferMachine = BufferMachine.TestCase
