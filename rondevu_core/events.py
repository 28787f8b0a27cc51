"""Everything a machine tells the application, drained with ``machine.next_event()``.

Each event is a frozen, keyword-only dataclass deriving from `Event`; ``Event.name`` is
the 0.18.9 event name, so a driver can re-emit them on an event emitter under the
names users of the TypeScript client know.  Unlike 0.18.9, every documented event is
really emitted (B16): ``connecting`` on entering CONNECTING, ``reconnect:success`` after a
reconnection, and so on.  A few events are ours: ``protocol:error`` (remote misbehaviour,
STYLE point 4), ``signaling:error`` (a signaling call failed without ending the attempt)
and the pool's ``offers:published`` / ``offers:publish:failed``.

``connection_id`` names the durable connection an event belongs to (an offer pool runs
many); pool-level events carry 0.

Size.  One flat module of some forty small classes, on purpose: it is the vocabulary
the application matches on and looks up by name, and cutting it up would only scatter
that list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from rondevu_core.buffer import Payload
from rondevu_core.errors import ProtocolError

__all__ = [
    "ALL_EVENTS",
    "AnswerDuplicate",
    "AnswerProcessed",
    "CleanupComplete",
    "CleanupStarted",
    "Closed",
    "Connected",
    "Connecting",
    "ConnectionOpened",
    "ConnectionTimeout",
    "DataChannelClose",
    "DataChannelError",
    "DataChannelOpen",
    "Disconnected",
    "Event",
    "Failed",
    "IceCandidateLocal",
    "IceCandidateRejected",
    "IceCandidateRemote",
    "IceConnectionState",
    "IceGatheringState",
    "IceGatheringTimeout",
    "IcePollingStarted",
    "IcePollingStopped",
    "Message",
    "MessageBufferExpired",
    "MessageBufferOverflow",
    "MessageBuffered",
    "MessageReplayed",
    "MessageSent",
    "MessagesAcked",
    "MessagesUndelivered",
    "OfferCreated",
    "OfferFetched",
    "OffersPublished",
    "PeerConnectionState",
    "PermanentError",
    "ProtocolViolation",
    "PublishFailed",
    "ReconnectAttempting",
    "ReconnectExhausted",
    "ReconnectFailed",
    "ReconnectScheduled",
    "ReconnectSuccess",
    "ServiceRepublished",
    "SessionReset",
    "SignalingError",
    "StateChanged",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every application event."""

    name: ClassVar[str]
    """The 0.18.9 event name (``state:changed``, ``message``, …)."""
    connection_id: int
    """The durable connection concerned; 0 for pool-level events."""


# -- lifecycle ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged(Event):
    """``state:changed``: the connection moved from ``old`` to ``new`` (State values)."""

    name: ClassVar[str] = "state:changed"
    old: str
    new: str
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Connecting(Event):
    """``connecting``: ICE connected, waiting for the data channel (or the reverse)."""

    name: ClassVar[str] = "connecting"


@dataclass(frozen=True, slots=True, kw_only=True)
class Connected(Event):
    """``connected``: ICE connected *and* data channel open."""

    name: ClassVar[str] = "connected"


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnected(Event):
    """``disconnected``: an established connection dropped."""

    name: ClassVar[str] = "disconnected"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed(Event):
    """``failed``: an attempt failed (reconnection may follow)."""

    name: ClassVar[str] = "failed"
    error: str
    final: bool
    """True when the connection gives up here (an offerer's connection, reconnection
    disabled, or attempts exhausted): nothing more happens until it is closed.  False
    when a reconnection follows (or waits for `ResumeReconnect`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Closed(Event):
    """``closed``: the final event of a connection.

    ``unsent`` holds the messages still buffered (and, with the session layer, those
    not acknowledged) when ``preserve_buffer_on_close`` is set; otherwise ``unsent`` is
    empty and a ``message:undelivered`` event just before this one listed them.
    """

    name: ClassVar[str] = "closed"
    reason: str
    unsent: tuple[Payload, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionTimeout(Event):
    """``connection:timeout``: the attempt did not reach CONNECTED in time."""

    name: ClassVar[str] = "connection:timeout"


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanupStarted(Event):
    """``cleanup:started``: a peer connection is being torn down."""

    name: ClassVar[str] = "cleanup:started"


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanupComplete(Event):
    """``cleanup:complete``: its close was requested and its timers and polls stopped."""

    name: ClassVar[str] = "cleanup:complete"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConnectionState(Event):
    """``connection:state``: the peer connection's ``connectionState``."""

    name: ClassVar[str] = "connection:state"
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolViolation(Event):
    """``protocol:error`` (ours): a server reply or driver report broke the protocol."""

    name: ClassVar[str] = "protocol:error"
    error: ProtocolError


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalingError(Event):
    """``signaling:error`` (ours): a signaling call failed; the attempt goes on."""

    name: ClassVar[str] = "signaling:error"
    operation: str
    error: str


# -- reconnection ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectScheduled(Event):
    """``reconnect:scheduled``: attempt ``attempt`` (1-based) starts in ``delay`` ms."""

    name: ClassVar[str] = "reconnect:scheduled"
    attempt: int
    delay: int
    max_attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectAttempting(Event):
    """``reconnect:attempting``: attempt ``attempt`` starts now."""

    name: ClassVar[str] = "reconnect:attempting"
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectSuccess(Event):
    """``reconnect:success``: a reconnection reached CONNECTED."""

    name: ClassVar[str] = "reconnect:success"
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectFailed(Event):
    """``reconnect:failed``: one reconnection attempt failed."""

    name: ClassVar[str] = "reconnect:failed"
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectExhausted(Event):
    """``reconnect:exhausted``: no attempt is left; the connection stays FAILED."""

    name: ClassVar[str] = "reconnect:exhausted"
    attempts: int


# -- messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Message(Event):
    """``message``: data received on the channel."""

    name: ClassVar[str] = "message"
    data: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageSent(Event):
    """``message:sent``: accepted for sending; ``buffered`` when held for later."""

    name: ClassVar[str] = "message:sent"
    data: Payload
    buffered: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageBuffered(Event):
    """``message:buffered``: held until the connection is up."""

    name: ClassVar[str] = "message:buffered"
    data: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReplayed(Event):
    """``message:replayed``: a buffered message was sent after (re)connecting."""

    name: ClassVar[str] = "message:replayed"
    data: Payload
    buffered_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageBufferOverflow(Event):
    """``message:buffer:overflow``: the buffer was full; this (oldest) message was dropped."""

    name: ClassVar[str] = "message:buffer:overflow"
    data: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageBufferExpired(Event):
    """``message:buffer:expired``: this message waited longer than ``max_buffer_age_ms``."""

    name: ClassVar[str] = "message:buffer:expired"
    data: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagesUndelivered(Event):
    """``message:undelivered`` (ours): these messages will not be delivered by us.

    Every way a message can be given up ends here or in one of the two buffer events
    above: a full send window (``on_window_full="report"``), a close or a final failure
    with messages unsent or unacknowledged, a session dropped after its peer did not
    come back or came back as a new process (``on_peer_reset="drop"``).
    ``maybe_delivered`` is True when some of them went out on a channel and only their
    acknowledgement is missing: the peer may have them.
    """

    name: ClassVar[str] = "message:undelivered"
    messages: tuple[Payload, ...]
    reason: str
    maybe_delivered: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagesAcked(Event):
    """``message:acked`` (ours, session layer): the peer confirmed ``count`` more
    messages, so the send window has room for as many."""

    name: ClassVar[str] = "message:acked"
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionReset(Event):
    """``session:reset`` (ours, session layer): the other end is a new process (or no
    longer speaks the layer), so the old session ended.  ``unacked`` lists what it had
    not acknowledged; ``resent`` says whether they were queued again for the new peer
    (``on_peer_reset="resend"``, at-least-once) or dropped (then also reported by
    ``message:undelivered``)."""

    name: ClassVar[str] = "session:reset"
    unacked: tuple[Payload, ...]
    resent: bool
    reason: str


# -- ICE and data channel ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IceCandidateLocal(Event):
    """``ice:candidate:local``: a local candidate; None marks the end of gathering."""

    name: ClassVar[str] = "ice:candidate:local"
    candidate: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class IceCandidateRemote(Event):
    """``ice:candidate:remote``: a remote candidate handed to the peer connection."""

    name: ClassVar[str] = "ice:candidate:remote"
    candidate: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class IceCandidateRejected(Event):
    """``ice:candidate:rejected`` (ours): the peer connection refused one of the other
    side's candidates; the attempt goes on with the others."""

    name: ClassVar[str] = "ice:candidate:rejected"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IceConnectionState(Event):
    """``ice:connection:state``."""

    name: ClassVar[str] = "ice:connection:state"
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IceGatheringState(Event):
    """``ice:gathering:state``."""

    name: ClassVar[str] = "ice:gathering:state"
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IceGatheringTimeout(Event):
    """``ice:gathering:timeout``: gathering still running; trickling goes on."""

    name: ClassVar[str] = "ice:gathering:timeout"


@dataclass(frozen=True, slots=True, kw_only=True)
class IcePollingStarted(Event):
    """``ice:polling:started``: remote-candidate polling began."""

    name: ClassVar[str] = "ice:polling:started"


@dataclass(frozen=True, slots=True, kw_only=True)
class IcePollingStopped(Event):
    """``ice:polling:stopped``: remote-candidate polling ended."""

    name: ClassVar[str] = "ice:polling:stopped"


@dataclass(frozen=True, slots=True, kw_only=True)
class DataChannelOpen(Event):
    """``datachannel:open``."""

    name: ClassVar[str] = "datachannel:open"


@dataclass(frozen=True, slots=True, kw_only=True)
class DataChannelClose(Event):
    """``datachannel:close``."""

    name: ClassVar[str] = "datachannel:close"


@dataclass(frozen=True, slots=True, kw_only=True)
class DataChannelError(Event):
    """``datachannel:error``."""

    name: ClassVar[str] = "datachannel:error"
    error: str


# -- offerer ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerProcessed(Event):
    """``answer:processed``: the answer to ``offer_id`` was applied (exactly once: B6)."""

    name: ClassVar[str] = "answer:processed"
    offer_id: str
    answerer_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerDuplicate(Event):
    """``answer:duplicate``: another answer for an offer already answered was ignored."""

    name: ClassVar[str] = "answer:duplicate"
    offer_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferCreated(Event):
    """``offer:created`` (pool): ``offer_id`` is published; ``connection_id`` owns it."""

    name: ClassVar[str] = "offer:created"
    offer_id: str
    service_fqn: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferFetched(Event):
    """``offer:fetched`` (answerer, our extension of the event set): the attempt took
    offer ``offer_id`` of ``username`` and is answering it.  After discovery this is
    how the application learns which publisher it reached."""

    name: ClassVar[str] = "offer:fetched"
    offer_id: str
    username: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionOpened(Event):
    """``connection:opened`` (pool): the connection made for ``offer_id`` is CONNECTED."""

    name: ClassVar[str] = "connection:opened"
    offer_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OffersPublished(Event):
    """``offers:published`` (pool, ours): one publishService call succeeded."""

    name: ClassVar[str] = "offers:published"
    offer_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishFailed(Event):
    """``offers:publish:failed`` (pool, ours): publishService failed; it will be retried."""

    name: ClassVar[str] = "offers:publish:failed"
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PermanentError(Event):
    """``error:permanent`` (ours): a call failed in a way no retry can fix, so the
    connection (or, with ``connection_id`` 0, the pool) gives up on it at once.

    ``kind`` is ``"identity"`` when the server refused our username and key pair (a
    name held by another key: 0.5.4 says only ``Invalid signature``) and
    ``"permanent"`` for a malformed call (service name, parameter, unknown method);
    see `rondevu_core.rules.error_kinds`."""

    name: ClassVar[str] = "error:permanent"
    operation: str
    error: str
    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRepublished(Event):
    """``service:republished`` (pool, ours): the pool found its offers gone from the
    server (a server restart, expiry, another process with the same identity replacing
    them) and published them again; ``reason`` says what it saw."""

    name: ClassVar[str] = "service:republished"
    reason: str
    offer_ids: tuple[str, ...]


ALL_EVENTS: tuple[type[Event], ...] = (
    StateChanged,
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
    ConnectionTimeout,
    CleanupStarted,
    CleanupComplete,
    PeerConnectionState,
    ProtocolViolation,
    SignalingError,
    ReconnectScheduled,
    ReconnectAttempting,
    ReconnectSuccess,
    ReconnectFailed,
    ReconnectExhausted,
    Message,
    MessageSent,
    MessageBuffered,
    MessageReplayed,
    MessageBufferOverflow,
    MessageBufferExpired,
    MessagesUndelivered,
    MessagesAcked,
    SessionReset,
    IceCandidateLocal,
    IceCandidateRemote,
    IceCandidateRejected,
    IceConnectionState,
    IceGatheringState,
    IceGatheringTimeout,
    IcePollingStarted,
    IcePollingStopped,
    DataChannelOpen,
    DataChannelClose,
    DataChannelError,
    AnswerProcessed,
    AnswerDuplicate,
    OfferCreated,
    OfferFetched,
    ConnectionOpened,
    OffersPublished,
    PublishFailed,
    PermanentError,
    ServiceRepublished,
)
"""Every event class, for drivers that map names to emitters and for coverage tests."""
