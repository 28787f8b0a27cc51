"""What an `AiortcPeer` reports: one frozen event per thing that happened.

Each event is an input the sans-IO core can consume as is; the driver decides nothing.
States are aiortc's strings, passed through unchanged so nothing is lost in translation.
Channels are named by a small integer the driver assigns (0, 1, ... per peer, in order of
local creation or remote announcement), because labels need not be unique and SCTP stream
ids are only known once the association is up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rondevu_core.buffer import Payload

__all__ = [
    "ConnectionStateChanged",
    "DataChannelAnnounced",
    "DataChannelClosed",
    "DataChannelError",
    "DataChannelInfo",
    "DataChannelMessage",
    "DataChannelOpened",
    "IceConnectionStateChanged",
    "IceGatheringStateChanged",
    "LocalDescriptionReady",
    "PeerEvent",
    "RemoteInputRejected",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerEvent:
    """Base class of everything an `AiortcPeer` reports."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DataChannelInfo:
    """A data channel's identity and negotiated reliability options."""

    channel: int
    """The driver's handle for this channel (pass it to `AiortcPeer.send`)."""
    label: str
    ordered: bool
    max_retransmits: int | None
    """Partial reliability by retransmit count; None when fully reliable or time-bounded."""
    max_packet_life_time: int | None
    """Partial reliability by lifetime in ms; None when fully reliable or count-bounded."""
    protocol: str
    local: bool
    """True when this peer created the channel, False when the remote peer announced it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalDescriptionReady(PeerEvent):
    """The local offer or answer is set; ``sdp`` is what to send to the remote peer.

    aiortc gathers every candidate inside setLocalDescription, so the SDP already
    embeds all local candidates and gathering is complete (``candidates_embedded`` is
    always True with this driver; it is spelled out because a browser's SDP at the same
    point holds none, and a trickle-ICE peer must then send them separately).
    """

    type: Literal["offer", "answer"]
    sdp: str
    candidates_embedded: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class IceGatheringStateChanged(PeerEvent):
    """``iceGatheringState`` changed: ``new``, ``gathering`` or ``complete``."""

    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IceConnectionStateChanged(PeerEvent):
    """``iceConnectionState`` changed.

    aiortc knows only ``new``, ``checking``, ``completed``, ``failed`` and ``closed``:
    there is no ``connected`` and no ``disconnected``.
    """

    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionStateChanged(PeerEvent):
    """``connectionState`` changed: ``new``, ``connecting``, ``connected``, ``failed``, ``closed``.

    aiortc has no ``disconnected``: a peer that vanishes without closing is noticed only
    when ICE consent expires (about 30 s), and the state then jumps straight to
    ``closed``.  ``closed`` without a local `AiortcPeer.close` therefore means the remote
    side went away (cleanly or not).
    """

    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DataChannelAnnounced(PeerEvent):
    """The remote peer opened a data channel (answerer side: ``pc.on("datachannel")``).

    It is followed at once by `DataChannelOpened`, since aiortc announces channels open.
    """

    info: DataChannelInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class DataChannelOpened(PeerEvent):
    """The channel is open: `AiortcPeer.send` may be used on it."""

    channel: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DataChannelClosed(PeerEvent):
    """The channel closed (either side, or the peer connection closed); it stays closed."""

    channel: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DataChannelMessage(PeerEvent):
    """A message arrived; ``data`` is `str` for a text message, `bytes` for binary."""

    channel: int
    data: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class DataChannelError(PeerEvent):
    """The channel's emitter reported an error (``datachannel:error``).

    aiortc 1.16 never emits one by itself; the emitter reports an exception raised
    while dispatching one of this channel's events (for example by the event callback).
    """

    channel: int
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteInputRejected(PeerEvent):
    """Remote data (an offer, an answer or a candidate) could not be applied.

    This is remote misbehaviour, reported rather than raised (STYLE.md point 4); the
    peer connection is unchanged by the rejected input.
    """

    kind: Literal["offer", "answer", "candidate"]
    reason: str
