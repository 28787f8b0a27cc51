"""Everything a machine consumes: application commands, driver reports, RPC results.

Every input is a frozen, keyword-only dataclass deriving from `Input`, carries ``now``
(monotonic ms, from the driver's clock: deadlines only) and names its `InputKind`; the
transition tables of `rondevu_core.connection` and `rondevu_core.pool` are keyed on that
kind.  Timer expiry is not an input: drivers call ``handle_timer(now)`` when
``get_timer()`` is due (the aioquic model).

Three families:

- **Commands** come from the application: `Connect`, `SendMessage`, `Close`,
  `PauseReconnect`, `ResumeReconnect`, `StartFilling`, `StopFilling`.  Misusing one
  (sending on a closed connection) raises `UsageError` at the caller.
- **Peer reports** come from the WebRTC driver and name the peer connection they concern
  (``pc_id``, from `CreatePeerConnection`).  Reports about a peer connection the machine
  has already closed are stale and ignored; a report that makes no sense in the current
  state becomes a ``protocol:error`` event, never an exception.
- **RPC results**: `RpcResult` answers the `SendRpc` action with the same ``call_id``.

Commands addressed to one connection of an offer pool name it with ``connection_id``;
a standalone connection ignores that field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from rondevu_core.buffer import Payload
from rondevu_core.rpc import RpcOutcome

__all__ = [
    "COMMAND_KINDS",
    "PEER_KINDS",
    "ChannelAnnounced",
    "ChannelClosed",
    "ChannelError",
    "ChannelInput",
    "ChannelMessage",
    "ChannelOpen",
    "Close",
    "Connect",
    "IceConnectionStateChanged",
    "IceGatheringStateChanged",
    "Input",
    "InputKind",
    "LocalCandidate",
    "LocalDescriptionReady",
    "PauseReconnect",
    "PeerConnectionStateChanged",
    "PeerError",
    "PeerInput",
    "RemoteCandidateRejected",
    "RemoteDescriptionSet",
    "ResumeReconnect",
    "RpcResult",
    "SendMessage",
    "StartFilling",
    "StopFilling",
]


class InputKind(Enum):
    """The key of every transition table."""

    CONNECT = "connect"
    SEND = "send"
    CLOSE = "close"
    PAUSE_RECONNECT = "pause_reconnect"
    RESUME_RECONNECT = "resume_reconnect"
    START_FILLING = "start_filling"
    STOP_FILLING = "stop_filling"
    LOCAL_DESCRIPTION = "local_description"
    REMOTE_DESCRIPTION_SET = "remote_description_set"
    LOCAL_CANDIDATE = "local_candidate"
    ICE_GATHERING_STATE = "ice_gathering_state"
    ICE_CONNECTION_STATE = "ice_connection_state"
    PEER_CONNECTION_STATE = "peer_connection_state"
    CHANNEL_ANNOUNCED = "channel_announced"
    CHANNEL_OPEN = "channel_open"
    CHANNEL_CLOSED = "channel_closed"
    CHANNEL_MESSAGE = "channel_message"
    CHANNEL_ERROR = "channel_error"
    PEER_ERROR = "peer_error"
    REMOTE_CANDIDATE_REJECTED = "remote_candidate_rejected"
    RPC_RESULT = "rpc_result"


@dataclass(frozen=True, slots=True, kw_only=True)
class Input:
    """Base of every input."""

    kind: ClassVar[InputKind]
    now: int
    """The driver's monotonic clock, in milliseconds; used for deadlines only.

    Any origin will do (`time.monotonic`, an event loop's clock, a fake), as long as it
    never goes back.  It is never compared with a server's timestamps: wall time enters
    only where the protocol needs it, as `RpcResult.unix_ms`.
    """


# -- application commands ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Connect(Input):
    """Start a standalone (answerer) connection: fetch an offer and answer it."""

    kind: ClassVar[InputKind] = InputKind.CONNECT


@dataclass(frozen=True, slots=True, kw_only=True)
class SendMessage(Input):
    """Send ``data`` on the data channel, or buffer it while not connected."""

    kind: ClassVar[InputKind] = InputKind.SEND
    data: Payload
    connection_id: int | None = None
    """Which pool connection; ignored by a standalone connection."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Close(Input):
    """Close for good: the machine ends in CLOSED and never acts again.  Idempotent."""

    kind: ClassVar[InputKind] = InputKind.CLOSE
    reason: str = "Closed by application"
    connection_id: int | None = None
    """Which pool connection; None closes the whole pool (or the standalone connection)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PauseReconnect(Input):
    """Stop scheduling reconnection attempts until `ResumeReconnect`."""

    kind: ClassVar[InputKind] = InputKind.PAUSE_RECONNECT
    connection_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeReconnect(Input):
    """Allow reconnection again; a pending reconnection starts at once."""

    kind: ClassVar[InputKind] = InputKind.RESUME_RECONNECT
    connection_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StartFilling(Input):
    """Offer pool: create and publish offers, then keep the pool full."""

    kind: ClassVar[InputKind] = InputKind.START_FILLING


@dataclass(frozen=True, slots=True, kw_only=True)
class StopFilling(Input):
    """Offer pool: stop publishing and close every connection the pool made."""

    kind: ClassVar[InputKind] = InputKind.STOP_FILLING


# -- peer connection reports ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerInput(Input):
    """Base of every report about one peer connection."""

    pc_id: int
    """The id given in `CreatePeerConnection`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalDescriptionReady(PeerInput):
    """`CreateOffer`/`CreateAnswer` finished: the local description is set.

    aiortc gathers every candidate inside ``setLocalDescription``, so its SDP holds them
    all (``complete=True``); browsers report ``complete=False`` and trickle candidates
    as `LocalCandidate`.
    """

    kind: ClassVar[InputKind] = InputKind.LOCAL_DESCRIPTION
    sdp: str
    complete: bool
    """True when the SDP already contains every local candidate (gathering done)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteDescriptionSet(PeerInput):
    """`SetRemoteDescription` finished; remote candidates may now be added."""

    kind: ClassVar[InputKind] = InputKind.REMOTE_DESCRIPTION_SET


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalCandidate(PeerInput):
    """A trickled local candidate (``onicecandidate`` with a non-null candidate)."""

    kind: ClassVar[InputKind] = InputKind.LOCAL_CANDIDATE
    candidate: Mapping[str, Any]
    """``RTCIceCandidateInit``: ``{"candidate": "candidate:…", "sdpMid", "sdpMLineIndex"}``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IceGatheringStateChanged(PeerInput):
    """``icegatheringstatechange``: ``new``, ``gathering`` or ``complete``."""

    kind: ClassVar[InputKind] = InputKind.ICE_GATHERING_STATE
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IceConnectionStateChanged(PeerInput):
    """``iceconnectionstatechange``: new, checking, connected, completed, disconnected,
    failed or closed."""

    kind: ClassVar[InputKind] = InputKind.ICE_CONNECTION_STATE
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConnectionStateChanged(PeerInput):
    """``connectionstatechange``: new, connecting, connected, disconnected, failed, closed.

    aiortc reports a vanished peer only as ``closed`` (after about 30 s); the machine
    treats a ``closed`` it did not ask for as a failure, not as a user close.
    """

    kind: ClassVar[InputKind] = InputKind.PEER_CONNECTION_STATE
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelInput(PeerInput):
    """Base of every report about one data channel of a peer connection."""

    channel: int = 0
    """The driver's name for the channel (any integer, unique within its peer
    connection).  The connection speaks on one channel per peer connection - the first
    one reported (announced, or opened) - and ignores reports about any other: a peer
    may open channels of its own."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelAnnounced(ChannelInput):
    """A data channel exists: created by `CreateDataChannel` (``local``) or announced by
    the remote peer (``ondatachannel``).  Optional: a driver that reports only
    `ChannelOpen` works the same, the first channel reported is the connection's."""

    kind: ClassVar[InputKind] = InputKind.CHANNEL_ANNOUNCED
    label: str
    local: bool
    """True when this side created the channel, False when the remote peer announced it."""
    ordered: bool = True
    max_retransmits: int | None = None
    """Partial reliability by retransmit count; None when fully reliable or time-bounded."""
    max_packet_life_time: int | None = None
    """Partial reliability by lifetime in ms; None when fully reliable or count-bounded."""
    protocol: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelOpen(ChannelInput):
    """The data channel is open (offerer: the one it created; answerer: ``ondatachannel``)."""

    kind: ClassVar[InputKind] = InputKind.CHANNEL_OPEN


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelClosed(ChannelInput):
    """The data channel closed."""

    kind: ClassVar[InputKind] = InputKind.CHANNEL_CLOSED


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelMessage(ChannelInput):
    """A message arrived on the data channel."""

    kind: ClassVar[InputKind] = InputKind.CHANNEL_MESSAGE
    data: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelError(ChannelInput):
    """The data channel reported an error (not fatal by itself)."""

    kind: ClassVar[InputKind] = InputKind.CHANNEL_ERROR
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerError(PeerInput):
    """A peer-connection operation the machine asked for failed (for example
    ``setRemoteDescription`` rejected the SDP).  Fails the current attempt."""

    kind: ClassVar[InputKind] = InputKind.PEER_ERROR
    operation: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteCandidateRejected(PeerInput):
    """The peer connection refused one of the other side's ICE candidates (malformed, or
    of a kind it cannot use).  Not fatal: other candidates may still connect."""

    kind: ClassVar[InputKind] = InputKind.REMOTE_CANDIDATE_REJECTED
    reason: str


# -- RPC results ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcResult(Input):
    """The outcome of the `SendRpc` action with the same ``call_id``."""

    kind: ClassVar[InputKind] = InputKind.RPC_RESULT
    call_id: int
    outcome: RpcOutcome
    unix_ms: int
    """The wall clock (Unix milliseconds) when the reply arrived.

    The server stamps answers and candidates with its wall clock; the machines check
    those stamps for plausibility against this value before a cursor may move past them.
    It is a separate field, not ``now``, because the two clocks differ by decades.
    """


COMMAND_KINDS = frozenset(
    {
        InputKind.CONNECT,
        InputKind.SEND,
        InputKind.CLOSE,
        InputKind.PAUSE_RECONNECT,
        InputKind.RESUME_RECONNECT,
        InputKind.START_FILLING,
        InputKind.STOP_FILLING,
    }
)
"""Inputs from the application: misuse raises `UsageError`."""

PEER_KINDS = frozenset(
    k for k in InputKind if k not in COMMAND_KINDS and k is not InputKind.RPC_RESULT
)
"""Inputs reported by the WebRTC driver about one peer connection."""
