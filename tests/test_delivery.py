"""The session layer's machine (`rondevu_core.delivery`): frames, acks, retransmission,
heartbeat, chunking and window bounds, over two endpoints joined by an in-memory pipe.

The stateful test runs random schedules of sends, partial deliveries, channel drops,
reconnections, duplicated and stale frames, lost acks, silences and peer resets, and
holds the pair to: what each side delivered is a prefix of what the other sent (so no
duplicate, no reordering), the window stays within its bounds, every message a reset
ends is reported, and once the link is left up everything sent is delivered.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from rondevu_core.buffer import Payload
from rondevu_core.delivery import DeliverySession, SessionConfig, WindowFullError
from rondevu_core.delivery.frames import (
    AckFrame,
    DataFrame,
    HelloFrame,
    decode_frame,
    encode_ack,
    encode_data,
    encode_hello,
)
from rondevu_core.delivery.machine import (
    Acknowledged,
    ChannelDown,
    ChannelUp,
    Delivered,
    FrameReceived,
    FrameRejected,
    PeerReset,
    PeerSilent,
    SendPayload,
    Transmit,
)
from rondevu_core.errors import ProtocolError, UsageError

SMALL = SessionConfig(
    max_frame_bytes=26,  # 8 payload bytes per frame: most messages are chunked
    window_messages=4,
    window_bytes=64,
    max_message_bytes=200,
    ack_every=3,
    ack_delay_ms=5,
    heartbeat_interval_ms=100,
    heartbeat_timeout_ms=250,
)


# -- frames ------------------------------------------------------------------------------


def test_frames_round_trip() -> None:
    frame = decode_frame(encode_data(seq=7, ack=3, text=True, more=True, payload=b"hi"))
    assert frame == DataFrame(seq=7, ack=3, text=True, more=True, payload=b"hi")
    assert decode_frame(encode_ack(2**64 - 1)) == AckFrame(ack=2**64 - 1)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x03", b"\x01\x00", b"\x02" + bytes(7), b"\x02" + bytes(9), b"\x01\x04" + bytes(16)],
)
def test_malformed_frames_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_frame(raw)


# -- the pipe ----------------------------------------------------------------------------


@dataclass
class End:
    """One endpoint: its machine, what it delivered, what it was told."""

    session: DeliverySession
    delivered: list[Payload] = field(default_factory=list)
    rejected: list[ProtocolError] = field(default_factory=list)
    silent: int = 0
    reset: int = 0


class Pair:
    """Two sessions joined by a reliable ordered pipe that can be cut."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.ends = [End(DeliverySession(config)), End(DeliverySession(config))]
        self.pipes: list[deque[bytes]] = [deque(), deque()]  # pipes[i]: from i to 1-i
        self.history: list[list[bytes]] = [[], []]
        self.up = False
        self.now = 0

    def pump(self, i: int) -> None:
        end = self.ends[i]
        while (action := end.session.next_action()) is not None:
            assert isinstance(action, Transmit)
            assert self.up, "a session transmitted with no channel"
            self.pipes[i].append(action.data)
            self.history[i].append(action.data)
        while (event := end.session.next_event()) is not None:
            if isinstance(event, Delivered):
                end.delivered.append(event.data)
            elif isinstance(event, FrameRejected):
                end.rejected.append(event.error)
            elif isinstance(event, PeerSilent):
                end.silent += 1
                self.cut()
            elif isinstance(event, PeerReset):
                end.reset += 1
            else:
                assert isinstance(event, Acknowledged)
                assert event.count > 0

    def feed(self, i: int, input_: ChannelUp | ChannelDown | FrameReceived | SendPayload) -> None:
        self.ends[i].session.handle(input_)
        self.pump(i)

    def connect(self) -> None:
        if self.up:
            return
        self.up = True
        for i in (0, 1):
            self.feed(i, ChannelUp(now=self.now))

    def cut(self) -> None:
        if not self.up:
            return
        self.up = False
        for i in (0, 1):
            self.pipes[i].clear()  # in flight on the dead channel: lost
            self.ends[i].session.handle(ChannelDown(now=self.now))

    def carry(self, i: int, count: int) -> None:
        """Deliver up to ``count`` frames from end ``i`` to the other end."""
        for _ in range(count):
            if not self.up or not self.pipes[i]:
                return
            self.feed(1 - i, FrameReceived(now=self.now, data=self.pipes[i].popleft()))

    def tick(self, ms: int) -> None:
        self.now += ms
        for i in (0, 1):
            self.ends[i].session.handle_timer(self.now)
            self.pump(i)

    def settle(self) -> None:
        """Leave the link up and carry everything until both sides are quiet.

        Quiet means: after a heartbeat interval each side sent its heartbeat (its latest
        cumulative ack, which repairs an ack lost earlier), and carrying those produced
        nothing more."""
        self.connect()
        for _ in range(10_000):
            if not (self.pipes[0] or self.pipes[1]):
                self.tick(self.config.heartbeat_interval_ms)
                self.carry(0, 1_000)
                self.carry(1, 1_000)
                if not (self.pipes[0] or self.pipes[1]):
                    return
            self.carry(0, 1_000)
            self.carry(1, 1_000)
        raise AssertionError("the pair never went quiet")


def test_lost_channel_retransmits_in_order_and_drops_duplicates() -> None:
    pair = Pair(SessionConfig())
    pair.connect()
    for n in range(5):
        pair.feed(0, SendPayload(now=0, data=f"m{n}"))
    pair.carry(0, 3)  # m0..m2 arrive, m3 and m4 are lost with the channel
    pair.cut()
    pair.settle()
    assert pair.ends[1].delivered == ["m0", "m1", "m2", "m3", "m4"]
    assert pair.ends[0].session.unacked_messages == 0


def test_acks_are_batched_not_one_per_message() -> None:
    config = SessionConfig(ack_every=32)
    pair = Pair(config)
    pair.connect()
    for _n in range(100):
        pair.feed(0, SendPayload(now=0, data=b"x"))
    pair.carry(0, 100)
    acks = [f for f in pair.pipes[1] if isinstance(decode_frame(f), AckFrame)]
    assert 1 <= len(acks) <= 100 // 32
    pair.settle()
    assert pair.ends[0].session.unacked_messages == 0


def test_large_message_is_chunked_and_reassembled() -> None:
    pair = Pair(SessionConfig(max_frame_bytes=65536))
    pair.connect()
    big = bytes(range(256)) * 1000  # 256 000 bytes: 4 frames of 64 KiB
    pair.feed(0, SendPayload(now=0, data=big))
    data = [f for f in pair.pipes[0] if isinstance(decode_frame(f), DataFrame)]
    assert all(len(f) <= 65536 for f in data)
    assert len(data) == 4
    pair.feed(0, SendPayload(now=0, data="é" * 40000))
    pair.settle()
    assert pair.ends[1].delivered == [big, "é" * 40000]


def test_heartbeat_keeps_an_idle_link_and_detects_silence() -> None:
    pair = Pair(SessionConfig())
    pair.connect()
    for _ in range(10):  # 10 s idle, both ends alive: heartbeats keep it up
        pair.tick(500)
        pair.carry(0, 10)
        pair.carry(1, 10)
    assert pair.up
    assert pair.ends[0].silent == 0
    timer = pair.ends[0].session.get_timer()
    assert timer is not None
    assert timer <= pair.now + 1000
    # The other side vanishes: nothing is carried any more.
    start = pair.now
    while pair.up:
        pair.tick(100)
        pair.pipes[0].clear()
        pair.pipes[1].clear()
    assert pair.ends[0].silent + pair.ends[1].silent >= 1
    assert pair.now - start <= 2500


def test_window_bounds_messages_and_bytes() -> None:
    session = DeliverySession(SessionConfig(window_messages=2, window_bytes=10))
    session.handle(SendPayload(now=0, data=b"12345"))
    assert not session.has_room(6)
    with pytest.raises(WindowFullError):
        session.handle(SendPayload(now=0, data=b"123456"))
    session.handle(SendPayload(now=0, data=b"12345"))
    with pytest.raises(WindowFullError):
        session.handle(SendPayload(now=0, data=b""))
    # Frames never exceed what the peer accepts.
    capped = DeliverySession(SessionConfig(), peer_limit=1000)
    capped.handle(ChannelUp(now=0))
    capped.handle(SendPayload(now=0, data=bytes(5000)))
    frames = []
    while (action := capped.next_action()) is not None:
        assert isinstance(action, Transmit)
        if isinstance(decode_frame(action.data), DataFrame):
            frames.append(action.data)
    assert len(frames) == 6
    assert max(map(len, frames)) == 1000
    with pytest.raises(ValueError, match="too small"):
        DeliverySession(SessionConfig(), peer_limit=10)
    # A message larger than the byte bound still goes, alone.
    lone = DeliverySession(SessionConfig(window_bytes=10))
    lone.handle(SendPayload(now=0, data=bytes(100)))
    assert not lone.has_room(0)
    with pytest.raises(UsageError):
        lone.handle(SendPayload(now=0, data=bytes(SessionConfig().max_message_bytes + 1)))


def test_out_of_sequence_and_bogus_frames_are_reported_not_delivered() -> None:
    session = DeliverySession(SessionConfig())
    session.handle(ChannelUp(now=0))
    session.handle(
        FrameReceived(now=0, data=encode_data(seq=1, ack=0, text=False, more=False, payload=b"x"))
    )
    session.handle(FrameReceived(now=0, data="text"))
    session.handle(FrameReceived(now=0, data=encode_ack(5)))  # acks what was never sent
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    assert len(events) == 3
    assert all(isinstance(e, FrameRejected) for e in events)
    assert session.delivered_frames == 0


def test_hello_tells_a_peer_that_lost_the_session() -> None:
    """One end forgets (a fresh session against the other's old one): on the next
    channel the old end sees the fresh end's HELLO and reports `PeerReset`; the fresh
    end ignores the old end's frames until the old end says hello again."""
    pair = Pair(SessionConfig())
    pair.connect()
    for n in range(3):
        pair.feed(0, SendPayload(now=0, data=f"a{n}"))
        pair.feed(1, SendPayload(now=0, data=f"b{n}"))
    pair.settle()
    pair.cut()
    pair.ends[1] = End(DeliverySession(SessionConfig()))  # end 1 restarted
    pair.feed(0, SendPayload(now=0, data="to the old peer"))
    pair.connect()
    pair.carry(0, 100)
    pair.carry(1, 100)
    assert pair.ends[0].reset == 1
    assert pair.ends[1].delivered == []  # the old session's frames were ignored
    assert pair.ends[1].rejected == []
    unacked = [u.data for u in pair.ends[0].session.unacked()]
    assert unacked == ["to the old peer"]
    # The owner of end 0 starts a new session on the same channel: both agree again.
    pair.ends[0] = End(DeliverySession(SessionConfig()))
    pair.feed(0, ChannelUp(now=pair.now))
    pair.feed(0, SendPayload(now=pair.now, data="to the new peer"))
    pair.settle()
    assert pair.ends[1].delivered == ["to the new peer"]


def test_a_hello_that_matches_changes_nothing() -> None:
    session = DeliverySession(SessionConfig())
    session.handle(ChannelUp(now=0))
    session.handle(FrameReceived(now=0, data=encode_hello(0, 0, 0)))
    session.handle(
        FrameReceived(now=0, data=encode_data(seq=0, ack=0, text=True, more=False, payload=b"hi"))
    )
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    assert events == [Delivered(data="hi")]


# -- stateful ----------------------------------------------------------------------------


class Schedules(RuleBasedStateMachine):
    """Random schedules over one pair; see the module docstring for the invariants."""

    @initialize()
    def start(self) -> None:
        self.pair = Pair(SMALL)
        self.sent: list[list[Payload]] = [[], []]
        self.reported: list[list[Payload]] = [[], []]
        self.generation_delivered: list[list[Payload]] = [[], []]
        self.counter = 0

    @rule(i=st.integers(0, 1), size=st.integers(0, 40), text=st.booleans())
    def send(self, i: int, size: int, text: bool) -> None:
        self.counter += 1
        body = f"{i}:{self.counter}:".ljust(size, "x")
        data: Payload = body if text else body.encode()
        session = self.pair.ends[i].session
        room = session.has_room(len(body.encode()))
        try:
            self.pair.feed(i, SendPayload(now=self.pair.now, data=data))
        except WindowFullError:
            assert not room
            return
        assert room
        self.sent[i].append(data)

    @rule(i=st.integers(0, 1), count=st.integers(1, 20))
    def carry(self, i: int, count: int) -> None:
        self.pair.carry(i, count)

    @rule()
    def cut(self) -> None:
        self.pair.cut()

    @rule()
    def reconnect(self) -> None:
        self.pair.connect()

    @rule(i=st.integers(0, 1), data=st.data())
    def stale_frame(self, i: int, data: st.DataObject) -> None:
        """Re-inject a DATA or ACK frame end ``i`` sent earlier, ahead of the pipe.

        Not a HELLO: it opens one channel, and copies from an earlier channel never
        reach the machine (the driver drops what an old peer connection reports), so a
        stale HELLO would rightly read as a peer that lost the session."""
        history = [f for f in self.pair.history[i] if not isinstance(decode_frame(f), HelloFrame)]
        if self.pair.up and history:
            frame = data.draw(st.sampled_from(history))
            pipe = self.pair.pipes[i]
            # Never ahead of the channel's HELLO: it is the first frame a channel
            # carries, so nothing, stale or not, can arrive on that channel before it.
            opened = bool(pipe) and isinstance(decode_frame(pipe[0]), HelloFrame)
            pipe.insert(1 if opened else 0, frame)

    @rule(i=st.integers(0, 1))
    def lose_acks(self, i: int) -> None:
        pipe = self.pair.pipes[i]
        kept = [f for f in pipe if not isinstance(decode_frame(f), AckFrame)]
        pipe.clear()
        pipe.extend(kept)

    @rule(ms=st.integers(1, 300))
    def tick(self, ms: int) -> None:
        self.pair.tick(ms)

    @rule(i=st.integers(0, 1))
    def peer_reset(self, i: int) -> None:
        """End ``i`` is replaced by a new process: both sides start a new session, and
        what either had not seen acknowledged is reported (and, here, not re-sent)."""
        self.pair.cut()
        for j in (0, 1):
            end = self.pair.ends[j]
            self.reported[j].extend(u.data for u in end.session.unacked())
            self.generation_delivered[1 - j].extend(end.delivered)
        ends = [End(DeliverySession(SMALL)), End(DeliverySession(SMALL))]
        # Everything sent so far is now either delivered or reported.
        for j in (0, 1):
            done = self.generation_delivered[j] + self.reported[j]
            assert set(map(repr, self.sent[j])) <= set(map(repr, done))
        self.pair.ends = ends
        self.pair.history = [[], []]
        self.base = [len(self.sent[0]), len(self.sent[1])]

    @invariant()
    def delivered_is_a_prefix_of_sent(self) -> None:
        base = getattr(self, "base", [0, 0])
        for j in (0, 1):
            delivered = self.pair.ends[1 - j].delivered
            assert delivered == self.sent[j][base[j] : base[j] + len(delivered)]

    @invariant()
    def window_within_bounds(self) -> None:
        for end in self.pair.ends:
            s = end.session
            assert s.unacked_messages <= SMALL.window_messages
            assert s.unacked_messages <= 1 or s.unacked_bytes <= SMALL.window_bytes

    @invariant()
    def only_injected_frames_are_rejected(self) -> None:
        # A reliable ordered channel never produces an error by itself; only a stale
        # frame from ahead of the sequence may be rejected (as out of sequence).
        for end in self.pair.ends:
            assert all("out of sequence" in str(e) for e in end.rejected)

    def teardown(self) -> None:
        if not hasattr(self, "pair"):
            return
        self.pair.settle()
        base = getattr(self, "base", [0, 0])
        for j in (0, 1):
            assert self.pair.ends[1 - j].delivered == self.sent[j][base[j] :]
            assert self.pair.ends[j].session.unacked_messages == 0


Schedules.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
test_schedules = Schedules.TestCase
