"""`DeliverySession`: exactly-once, in-order delivery over a sequence of data channels.

Theory of operation
-------------------
One session spans every data channel two processes open to each other while both live.
Each direction numbers its frames from 0 (a message larger than a frame becomes several
consecutive frames).  The sender keeps every message until the peer's cumulative
acknowledgement passes its last frame: that is the *window*, bounded in messages and
bytes.  While a channel is up every new frame is transmitted at once; when a new channel
comes up, everything still unacknowledged is transmitted again, in order.  The receiver
delivers frame ``expected`` and nothing else: an older one is a retransmission already
delivered (dropped, and acknowledged again), a newer one would leave a hole (a protocol
error: reported, dropped, and recovered by the next retransmission).  So the application
sees each message once, in order, however many channels come and go.

Acknowledgements ride on every DATA frame; when there is nothing to ride on, an ACK
frame goes out after ``ack_every`` frames or ``ack_delay_ms``, whichever comes first.
The same ACK frame is the heartbeat: sent when nothing else was for
``heartbeat_interval_ms``, and a channel from which nothing arrived for
``heartbeat_timeout_ms`` is declared dead (`PeerSilent`): the owner tears it down and
reconnects, without waiting for ICE consent (about 30 s in aiortc).

The machine follows `rondevu_core.machine.Machine`: ``handle(input)``, ``get_timer()`` /
``handle_timer(now)``, ``next_action()`` (frames to transmit) and ``next_event()``
(messages delivered, acknowledgements, a silent peer, a rejected frame).  It never reads
a clock; it holds no reference to a channel, only whether one is up.

Size.  About 500 lines with its vocabulary: the sending and receiving halves share the
current channel, the heartbeat and the acknowledgement schedule, so they stay one
machine, and its inputs, actions and events are defined here so the layer's contract
reads in one place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from rondevu_core.buffer import Payload
from rondevu_core.delivery.config import SessionConfig
from rondevu_core.delivery.frames import (
    DATA_HEADER_SIZE,
    AckFrame,
    HelloFrame,
    decode_frame,
    encode_ack,
    encode_data,
    encode_hello,
)
from rondevu_core.errors import ProtocolError, UsageError

__all__ = [
    "Acknowledged",
    "ChannelDown",
    "ChannelUp",
    "Delivered",
    "DeliverySession",
    "FrameReceived",
    "FrameRejected",
    "PeerReset",
    "PeerSilent",
    "SendPayload",
    "SessionAction",
    "SessionEvent",
    "SessionInput",
    "Transmit",
    "Unacked",
    "WindowFullError",
]


class WindowFullError(UsageError):
    """A send found the unacknowledged window full (messages or bytes)."""


# -- vocabulary ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInput:
    """Base of the session layer's inputs; ``now`` is monotonic ms."""

    now: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SendPayload(SessionInput):
    """The application sends one message (raises `WindowFullError` if no room)."""

    data: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelUp(SessionInput):
    """A data channel of this session opened: retransmit what is unacknowledged."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelDown(SessionInput):
    """The current data channel is gone: hold frames until the next one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameReceived(SessionInput):
    """One message arrived on the current channel."""

    data: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionAction:
    """Base of the session layer's actions."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Transmit(SessionAction):
    """Send these bytes on the current data channel, as one binary message."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEvent:
    """Base of the session layer's events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered(SessionEvent):
    """The next message of the peer, exactly once and in order."""

    data: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class Acknowledged(SessionEvent):
    """The peer acknowledged ``count`` more messages: the window has room again."""

    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSilent(SessionEvent):
    """Nothing arrived for ``heartbeat_timeout_ms``: the channel is considered dead."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerReset(SessionEvent):
    """The peer's HELLO shows it lost this session (it numbered fewer frames than we
    received, or received fewer than it had acknowledged): the owner must end this
    session and start a new one; nothing more is processed here."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameRejected(SessionEvent):
    """A received frame broke the protocol; it was dropped."""

    error: ProtocolError


@dataclass(frozen=True, slots=True, kw_only=True)
class Unacked:
    """A message the peer has not acknowledged: ``transmitted`` when it went out at
    least once (it may have arrived; only its acknowledgement is missing)."""

    data: Payload
    transmitted: bool


@dataclass(slots=True)
class _Outgoing:
    # Only the encoded bytes are kept (one copy per message): chunks are cut from them
    # when transmitted, and a text message is decoded again only to be reported.
    first: int
    raw: bytes
    frames: int
    text: bool

    @property
    def last(self) -> int:
        return self.first + self.frames - 1

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def data(self) -> Payload:
        return self.raw.decode() if self.text else self.raw


# -- the machine -----------------------------------------------------------------------


class DeliverySession:
    """Both directions of one session; see the module docstring."""

    __slots__ = (
        "_ack_due",
        "_ack_sent",
        "_actions",
        "_chunk",
        "_dead",
        "_estranged",
        "_events",
        "_expected",
        "_last_rx",
        "_last_tx",
        "_next_seq",
        "_partial",
        "_partial_size",
        "_partial_text",
        "_peer_ack",
        "_transmitted",
        "_unacked",
        "_up",
        "_window_bytes",
        "config",
    )

    def __init__(self, config: SessionConfig, *, peer_limit: int | None = None) -> None:
        """``peer_limit``: the largest message the peer's channel accepts (None: no
        limit); frames stay within it and within ``config.max_frame_bytes``."""
        self.config = config
        frame = (
            config.max_frame_bytes
            if peer_limit is None
            else min(config.max_frame_bytes, peer_limit)
        )
        if frame <= DATA_HEADER_SIZE:
            raise ValueError(f"the peer accepts messages of {frame} bytes: too small for frames")
        self._chunk = frame - DATA_HEADER_SIZE
        self._actions: deque[SessionAction] = deque()
        self._events: deque[SessionEvent] = deque()
        # Sending side.
        self._unacked: deque[_Outgoing] = deque()
        self._window_bytes = 0
        self._next_seq = 0
        self._peer_ack = 0
        self._transmitted = 0  # every seq below went out at least once
        # Receiving side.
        self._expected = 0
        self._ack_sent = 0
        self._ack_due: int | None = None
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._partial_text = False
        # The peer lost the session (`PeerReset`): this machine is finished.
        self._dead = False
        # The peer's HELLO does not fit our state (see `_on_hello`): it holds an older
        # session with our end, which it will end on our HELLO; until it says hello
        # again, its frames belong to that session and are ignored.
        self._estranged = False
        # The current channel.
        self._up = False
        self._last_rx = 0
        self._last_tx = 0

    # -- read-only state ---------------------------------------------------------------

    @property
    def channel_up(self) -> bool:
        """True between `ChannelUp` and `ChannelDown` (or a `PeerSilent`)."""
        return self._up

    @property
    def unacked_messages(self) -> int:
        """Messages in the window (sent or not, not yet acknowledged)."""
        return len(self._unacked)

    @property
    def unacked_bytes(self) -> int:
        """Payload bytes in the window."""
        return self._window_bytes

    @property
    def delivered_frames(self) -> int:
        """Frames received in order so far (the cumulative acknowledgement we owe)."""
        return self._expected

    def has_room(self, size: int) -> bool:
        """Whether a message of ``size`` bytes fits in the window now.  A message larger
        than the byte bound fits only into an empty window, so it is never stuck."""
        if len(self._unacked) >= self.config.window_messages:
            return False
        return not self._unacked or self._window_bytes + size <= self.config.window_bytes

    def unacked(self) -> Iterator[Unacked]:
        """What the peer has not acknowledged, oldest first."""
        for message in self._unacked:
            yield Unacked(data=message.data, transmitted=message.first < self._transmitted)

    # -- the Machine contract -----------------------------------------------------------

    def handle(self, input: SessionInput) -> None:
        """Consume one input; what it causes waits in the output queues."""
        match input:
            case FrameReceived(data=data, now=now):
                self._on_frame(data, now)
            case SendPayload(data=data, now=now):
                self._on_send(data, now)
            case ChannelUp(now=now):
                self._up = True
                self._last_rx = now
                self._last_tx = now
                # Where we stand first, so the peer can tell whether we lost anything.
                hello = encode_hello(self._expected, self._peer_ack, self._next_seq)
                self._actions.append(Transmit(data=hello))
                self._ack_sent = self._expected
                self._ack_due = None
                self._transmit_from(self._peer_ack, now)
            case ChannelDown():
                self._up = False
                self._ack_due = None
            case _:
                raise UsageError(f"unknown session input {type(input).__name__}")

    def get_timer(self) -> int | None:
        """The next deadline (heartbeat out, silence in, delayed ack), or None when down."""
        if not self._up:
            return None
        due = min(
            self._last_tx + self.config.heartbeat_interval_ms,
            self._last_rx + self.config.heartbeat_timeout_ms,
        )
        return due if self._ack_due is None else min(due, self._ack_due)

    def handle_timer(self, now: int) -> None:
        """Run what is due at ``now``."""
        if not self._up:
            return
        if now >= self._last_rx + self.config.heartbeat_timeout_ms:
            self._up = False
            self._ack_due = None
            self._events.append(PeerSilent())
            return
        ack_due = self._ack_due is not None and now >= self._ack_due
        if ack_due or now >= self._last_tx + self.config.heartbeat_interval_ms:
            self._send_ack(now)

    def next_action(self) -> SessionAction | None:
        """The oldest frame to transmit, or None."""
        return self._actions.popleft() if self._actions else None

    def next_event(self) -> SessionEvent | None:
        """The oldest event, or None."""
        return self._events.popleft() if self._events else None

    # -- sending -------------------------------------------------------------------------

    def _on_send(self, data: Payload, now: int) -> None:
        text = isinstance(data, str)
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if len(raw) > self.config.max_message_bytes:
            raise UsageError(
                f"message of {len(raw)} bytes exceeds max_message_bytes "
                f"({self.config.max_message_bytes})"
            )
        if not self.has_room(len(raw)):
            raise WindowFullError(
                f"send window full ({len(self._unacked)} messages, {self._window_bytes} bytes "
                "unacknowledged)"
            )
        step = self._chunk
        frames = max(1, -(-len(raw) // step))
        message = _Outgoing(first=self._next_seq, raw=raw, frames=frames, text=text)
        self._unacked.append(message)
        self._window_bytes += message.size
        self._next_seq += frames
        if self._up:
            self._transmit_message(message, message.first, now)

    def _transmit_from(self, seq: int, now: int) -> None:
        for message in self._unacked:
            if message.last >= seq:
                self._transmit_message(message, max(seq, message.first), now)

    def _transmit_message(self, message: _Outgoing, start: int, now: int) -> None:
        ack = self._expected
        last = message.last
        step = self._chunk
        view = memoryview(message.raw)
        for seq in range(start, last + 1):
            offset = (seq - message.first) * step
            self._actions.append(
                Transmit(
                    data=encode_data(
                        seq=seq,
                        ack=ack,
                        text=message.text,
                        more=seq != last,
                        payload=view[offset : offset + step],
                    )
                )
            )
        self._transmitted = max(self._transmitted, last + 1)
        self._ack_sent = ack
        self._ack_due = None
        self._last_tx = now

    def _send_ack(self, now: int) -> None:
        self._actions.append(Transmit(data=encode_ack(self._expected)))
        self._ack_sent = self._expected
        self._ack_due = None
        self._last_tx = now

    def _on_ack(self, ack: int) -> None:
        if ack > self._next_seq:
            self._reject("acknowledgement of a frame never sent")
            return
        if ack <= self._peer_ack:
            return  # nothing new (a late or repeated acknowledgement)
        self._peer_ack = ack
        freed = 0
        while self._unacked and self._unacked[0].last < ack:
            message = self._unacked.popleft()
            self._window_bytes -= message.size
            freed += 1
        if freed:
            self._events.append(Acknowledged(count=freed))

    # -- receiving -----------------------------------------------------------------------

    def _reject(self, text: str) -> None:
        self._events.append(FrameRejected(error=ProtocolError(text)))

    def _on_frame(self, data: Payload, now: int) -> None:
        self._last_rx = now
        if self._dead:
            return
        if isinstance(data, str):
            self._reject("text message on a session channel")
            return
        try:
            frame = decode_frame(data)
        except ProtocolError as error:
            self._events.append(FrameRejected(error=error))
            return
        if isinstance(frame, HelloFrame):
            self._on_hello(frame)
            return
        if self._estranged:
            return
        self._on_ack(frame.ack)
        if isinstance(frame, AckFrame):
            return
        if frame.seq < self._expected:
            # A retransmission of something delivered: our acknowledgement was lost.
            self._owe_ack(now, urgent=False)
            return
        if frame.seq > self._expected:
            self._reject("frame out of sequence")
            return
        self._expected += 1
        if self._partial and frame.text != self._partial_text:
            self._reject("chunks of one message disagree on its type")
            self._drop_partial()
        elif self._partial_size + len(frame.payload) > self.config.max_message_bytes:
            self._reject("reassembled message exceeds max_message_bytes")
            self._drop_partial()
        else:
            self._partial.append(frame.payload)
            self._partial_size += len(frame.payload)
            self._partial_text = frame.text
            if not frame.more:
                self._deliver()
        self._owe_ack(now, urgent=self._expected - self._ack_sent >= self.config.ack_every)

    def _on_hello(self, hello: HelloFrame) -> None:
        if hello.ack > self._next_seq or hello.base > self._expected:
            # It acknowledges frames we never numbered, or believes we have frames we
            # do not: its session is with an earlier incarnation of our end.
            self._estranged = True
            return
        if hello.sent < self._expected or hello.ack < self._peer_ack:
            self._dead = True
            self._events.append(PeerReset())
            return
        self._estranged = False
        self._on_ack(hello.ack)

    def _drop_partial(self) -> None:
        self._partial = []
        self._partial_size = 0

    def _deliver(self) -> None:
        raw = b"".join(self._partial)
        text = self._partial_text
        self._drop_partial()
        if not text:
            self._events.append(Delivered(data=raw))
            return
        try:
            self._events.append(Delivered(data=raw.decode()))
        except UnicodeDecodeError:
            self._reject("text message that is not UTF-8")

    def _owe_ack(self, now: int, *, urgent: bool) -> None:
        if not self._up:
            return  # the next ChannelUp acknowledges everything
        if urgent:
            self._send_ack(now)
        elif self._ack_due is None:
            self._ack_due = now + self.config.ack_delay_ms
