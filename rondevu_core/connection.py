"""The durable connection: one logical link to a peer, over one peer connection at a time.

Theory of operation
-------------------
A `Connection` consumes `rondevu_core.inputs` through `handle` and ``handle_timer``, and
queues `rondevu_core.actions` and `rondevu_core.events` on its `Outbox`; the driver
drains them with `next_action` / `next_event` and keeps one timer at `get_timer`.  It
never reads a clock (``now`` comes with every input) nor a random source (the backoff
jitter comes from the injected ``unit_random``).

States (the ten of the 0.18.9 client)::

    INITIALIZING  no peer connection yet (answerer: fetching an offer)
    GATHERING     the local description is being created / published
    SIGNALING     our description is out, waiting for the peer's (or for ICE to start)
    CHECKING      ICE is checking candidate pairs
    CONNECTING    ICE connected but the data channel is not open yet (or the reverse)
    CONNECTED     ICE connected *and* data channel open: messages flow
    DISCONNECTED  an established link dropped
    RECONNECTING  waiting for (or running) the backoff timer of the next attempt
    FAILED        an attempt failed; terminal unless a reconnection is pending
    CLOSED        closed for good: absorbs every report, never acts again

Roles.  An **answerer** (`Connection.answerer`, started by `Connect`) fetches an offer of
its service with getService, answers it, exchanges candidates, and reconnects after a
failure by fetching a *fresh* offer of the same service from the same user (pinned from
the first reply) and building a new peer connection (B13).  An **offerer** connection is
created by `rondevu_core.pool.OfferPool`, which publishes its offer and hands it the
answer; it never reconnects by itself (its peer comes back as a new answer to a new
offer) and closes its peer connection on failure so the pool can replace it (B14).

Transitions are data: `TRANSITIONS` maps every accepted ``(State, InputKind)`` to its
handler.  A pair that is not in the table is a usage error for application commands
(`UsageError` raised at the caller) and a protocol error for driver reports (a
``protocol:error`` event; the state does not change).  Reports naming a peer connection
other than the current one are stale (the driver raced our close) and are dropped; in
CLOSED every report and RPC result is dropped.  `EDGES` lists every state change a
handler may make; the tests hold the machine to it.

Failures.  ICE ``failed``, a peer-connection ``failed``, an unrequested ``closed`` (how
aiortc reports a vanished peer), the data channel closing, a failed peer operation, a
failed signaling call (except an answerOffer whose reply fails after the link came up
on that answer: that is only reported) or the connection timeout all end the current
attempt: the peer connection is closed, then the machine reconnects (answerer,
reconnection enabled, not exhausted, not paused) or stays FAILED.  ICE ``disconnected``
on an established link is softer: the old peer connection is kept while the backoff
timer runs, and the link is restored at no cost if ICE recovers first (browsers recover
from short outages).

Messages sent while not CONNECTED are buffered (bounded, aged) and replayed in order on
(re)connection; every message that leaves the buffer undelivered is reported.

The session layer.  When both descriptions carry the session attribute
(`rondevu_core.delivery.negotiation`), the data channel carries the frames of a
`DeliverySession` instead of plain messages: it outlives the peer connection, numbers,
acknowledges and retransmits messages (exactly once, in order, across reconnections)
and owns the heartbeat whose silence ends the current attempt like any other failure.
Once a session exists, sends go into its bounded window (no age limit) instead of the
buffer.  The answerer draws the session id and keeps it across its attempts; the
offerer learns it from the answer.  An offerer with a session does not give up when
its link is lost: it waits in RECONNECTING (``resume_timeout_ms``) for its pool to hand
it the peer connection of a new offer that the same session answered (`resume_with`).
An answerer whose fetched offer comes from another process (another epoch, or no
attribute at all) ends the old session with ``session:reset``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from rondevu_core.actions import (
    Action,
    ClosePeerConnection,
    CreateAnswer,
    CreateDataChannel,
    CreateOffer,
    CreatePeerConnection,
    SendData,
    SendRpc,
    SetRemoteDescription,
)
from rondevu_core.buffer import MessageBuffer, Payload
from rondevu_core.config import ConnectionConfig
from rondevu_core.delivery.machine import (
    Acknowledged,
    ChannelDown,
    ChannelUp,
    Delivered,
    DeliverySession,
    FrameReceived,
    FrameRejected,
    PeerReset,
    PeerSilent,
    SendPayload,
    Transmit,
    WindowFullError,
)
from rondevu_core.delivery.negotiation import (
    add_session_attribute,
    looks_like_sdp,
    read_session_attribute,
    remote_max_message_size,
)
from rondevu_core.errors import ProtocolError, UsageError
from rondevu_core.events import (
    AnswerProcessed,
    ChannelClose,
    ChannelErrorEvent,
    ChannelOpened,
    CleanupComplete,
    CleanupStarted,
    Closed,
    Connected,
    Connecting,
    ConnectionTimeout,
    Disconnected,
    Event,
    Failed,
    IceCandidateLocal,
    IceCandidateRejected,
    IceConnectionState,
    IceGatheringState,
    IceGatheringTimeout,
    Message,
    MessageBuffered,
    MessageBufferExpired,
    MessageBufferOverflow,
    MessageReplayed,
    MessagesAcked,
    MessageSent,
    MessagesUndelivered,
    OfferFetched,
    PeerConnectionState,
    PermanentError,
    ProtocolViolation,
    ReconnectAttempting,
    ReconnectExhausted,
    ReconnectFailed,
    ReconnectScheduled,
    ReconnectSuccess,
    SessionReset,
    SignalingError,
    StateChanged,
)
from rondevu_core.ice_exchange import (
    EnableUploads,
    EndExchange,
    IceExchange,
    ReuploadCandidates,
    StartPolling,
    StopPolling,
)
from rondevu_core.inputs import (
    COMMAND_KINDS,
    ChannelError,
    ChannelMessage,
    IceConnectionStateChanged,
    IceGatheringStateChanged,
    Input,
    InputKind,
    LocalCandidate,
    LocalDescriptionReady,
    PeerConnectionStateChanged,
    PeerError,
    PeerInput,
    RemoteCandidateRejected,
    RemoteDescriptionSet,
    RpcResult,
    SendMessage,
)
from rondevu_core.outbox import Deadlines, Outbox
from rondevu_core.rpc import Method, RpcFailed, RpcRequest, Urgency
from rondevu_core.rules.backoff import Backoff
from rondevu_core.rules.error_kinds import classify, is_permanent
from rondevu_core.rules.fqn import ServiceFqn
from rondevu_core.rules.replies import parse_fetched_offer

__all__ = ["EDGES", "TRANSITIONS", "Connection", "Role", "State"]


class State(Enum):
    """The ten connection states of 0.18.9."""

    INITIALIZING = "initializing"
    GATHERING = "gathering"
    SIGNALING = "signaling"
    CHECKING = "checking"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


class Role(Enum):
    """Which side of the offer/answer exchange this connection plays."""

    OFFERER = "offerer"
    ANSWERER = "answerer"


class _Timer(Enum):
    CONNECTION = "connection"
    HANDSHAKE = "handshake"
    GATHERING = "gathering"
    RECONNECT = "reconnect"
    BUFFER = "buffer"
    RESUME = "resume"
    PROBE = "probe"


class _Call(Enum):
    PROBE = "probe"
    FETCH_OFFER = "getService"
    ANSWER = "answerOffer"


class _Deferred(Enum):
    """What a paused reconnection will do on resume."""

    SCHEDULE = "schedule"
    ATTEMPT = "attempt"


S = State
_HANDSHAKE = frozenset({S.GATHERING, S.SIGNALING, S.CHECKING, S.CONNECTING})
_PC_ALIVE = _HANDSHAKE | {S.CONNECTED, S.DISCONNECTED, S.RECONNECTING}
_LIVE = frozenset(State) - {S.CLOSED}

_EARLY_FRAMES_MAX = 4096
"""Session frames kept while the link is not yet reported up; a peer that sends more
before our side sees the link is misbehaving (each frame beyond is a `ProtocolViolation`)."""

EDGES: frozenset[tuple[State, State]] = frozenset(
    {(S.INITIALIZING, S.GATHERING), (S.GATHERING, S.SIGNALING)}
    | {(S.SIGNALING, S.CHECKING), (S.SIGNALING, S.CONNECTING), (S.CHECKING, S.CONNECTING)}
    | {(a, S.CONNECTED) for a in (S.SIGNALING, S.CHECKING, S.CONNECTING)}
    | {(S.CONNECTED, S.DISCONNECTED), (S.DISCONNECTED, S.RECONNECTING)}
    | {(S.DISCONNECTED, S.CONNECTED), (S.RECONNECTING, S.CONNECTED)}
    | {(S.RECONNECTING, S.INITIALIZING), (S.DISCONNECTED, S.FAILED)}
    | {(a, S.FAILED) for a in _HANDSHAKE | {S.INITIALIZING, S.RECONNECTING}}
    | {(S.FAILED, S.RECONNECTING)}
    # An offerer resuming its session on a new peer connection (`resume_with`).
    | {(a, S.SIGNALING) for a in (S.CHECKING, S.CONNECTING, S.DISCONNECTED, S.RECONNECTING)}
    | {(a, S.CLOSED) for a in _LIVE}
)
"""Every state change a handler may make."""

Handler = Callable[["Connection", Any], None]


class Connection:
    """One durable connection; see the module docstring.

    Build answerers with `Connection.answerer`; offer pools build offerers with
    `Connection.offerer`.  Drive with `handle`, `handle_timer`, `get_timer`, and drain
    `next_action` / `next_event` (or the shared `Outbox`).
    """

    __slots__ = (
        "_backoff",
        "_buffer",
        "_calls",
        "_channel_open",
        "_closing_pc",
        "_deadlines",
        "_deferred",
        "_delivery",
        "_early_frames",
        "_epoch",
        "_exchange",
        "_held",
        "_ice_ok",
        "_layered",
        "_local_sdp",
        "_offer_id",
        "_outbox",
        "_paused",
        "_pc",
        "_peer_token",
        "_permanent",
        "_plain_limit",
        "_random",
        "_reconnect_attempt",
        "_session_token",
        "_silent_loss",
        "_stale",
        "_started",
        "_terminal",
        "answer_applied",
        "answerer_id",
        "config",
        "connection_id",
        "role",
        "service",
        "state",
    )

    def __init__(
        self,
        *,
        role: Role,
        service: ServiceFqn,
        config: ConnectionConfig,
        unit_random: Callable[[], float],
        outbox: Outbox | None = None,
        session_epoch: Callable[[], str] | None = None,
    ) -> None:
        self.role = role
        self.service = service
        self.config = config
        self._random = unit_random
        self._outbox = outbox if outbox is not None else Outbox()
        self.connection_id = self._outbox.new_id()
        self.state = State.INITIALIZING
        self._deadlines: Deadlines[_Timer] = Deadlines()
        self._backoff = Backoff(config.backoff_policy())
        self._buffer = MessageBuffer(
            max_size=config.max_buffer_size, max_age_ms=config.max_buffer_age_ms
        )
        self._calls: dict[int, _Call] = {}
        # Calls of abandoned attempts: their late results are expected and dropped.
        self._stale: set[int] = set()
        self._pc: int | None = None
        self._closing_pc = False
        self._exchange: IceExchange | None = None
        self._ice_ok = False
        self._channel_open = False
        self._local_sdp: str | None = None
        self._offer_id: str | None = None
        self._started = False
        self._paused = False
        self._deferred: _Deferred | None = None
        self._reconnect_attempt = 0
        self._terminal = False
        # A permanent error (error_kinds) ends the connection: no reconnection can help.
        self._permanent = False
        self.answer_applied = False
        self.answerer_id: str | None = None
        """Offerer: the username that answered (from the first applied answer on)."""
        # The session layer (see the module docstring).
        self._delivery: DeliverySession | None = None
        self._layered = False  # the current peer connection carries session frames
        self._epoch = session_epoch if config.session is not None else None
        self._session_token: str | None = None
        self._peer_token: str | None = None
        # Sent into the session while down: reported as replayed once a channel is up.
        self._held: list[tuple[Payload, int]] = []
        # Session frames that arrived before the link was reported up (ICE and the
        # channel report separately and in either order): the session gets them, in
        # order, right after its `ChannelUp`.
        self._early_frames: list[Payload] = []
        # The largest plain message the current peer accepts (None: no limit).
        self._plain_limit: int | None = None
        self._silent_loss = False  # the loss being handled is a heartbeat timeout

    @classmethod
    def answerer(
        cls,
        service: ServiceFqn,
        *,
        config: ConnectionConfig | None = None,
        unit_random: Callable[[], float],
        outbox: Outbox | None = None,
    ) -> Connection:
        """A connection that answers an offer of ``service``; start it with `Connect`.

        With a username in ``service`` the offer is fetched directly from that user;
        without one a random publisher is picked (§7.3) and then pinned, so
        reconnections return to the same user.
        """
        return cls(
            role=Role.ANSWERER,
            service=service,
            config=config or ConnectionConfig(),
            unit_random=unit_random,
            outbox=outbox,
        )

    @classmethod
    def offerer(
        cls,
        service: ServiceFqn,
        *,
        config: ConnectionConfig,
        unit_random: Callable[[], float],
        outbox: Outbox,
        session_epoch: Callable[[], str] | None = None,
    ) -> Connection:
        """A connection for one pool offer (used by `OfferPool`).

        ``session_epoch`` names the offering process in the session attribute of the
        offer; without it the offer does not propose the session layer."""
        return cls(
            role=Role.OFFERER,
            service=service,
            config=config,
            unit_random=unit_random,
            outbox=outbox,
            session_epoch=session_epoch,
        )

    # -- driver interface ------------------------------------------------------------

    def handle(self, input: Input) -> None:
        """Consume one input; what it causes waits in the output queues."""
        kind = input.kind
        if self.state is State.CLOSED:
            if kind in COMMAND_KINDS and kind is not InputKind.CLOSE:
                raise UsageError(f"{kind.value}: the connection is closed")
            return
        if isinstance(input, PeerInput) and input.pc_id != self._pc:
            return
        if isinstance(input, RpcResult) and not self._owns_call(input.call_id):
            if input.call_id in self._stale:
                self._stale.discard(input.call_id)
                return
            raise UsageError(f"unknown call id {input.call_id}")
        handler = TRANSITIONS.get((self.state, kind))
        if handler is None:
            if kind in COMMAND_KINDS:
                raise UsageError(f"{kind.value} is not allowed in state {self.state.value}")
            self._violation(f"{kind.value} is not expected in state {self.state.value}")
            return
        handler(self, input)

    def get_timer(self) -> int | None:
        """The next deadline (monotonic ms, the clock of ``now``), or None if none."""
        best = self._deadlines.next()
        for machine in (self._exchange, self._delivery):
            theirs = None if machine is None else machine.get_timer()
            if theirs is not None and (best is None or theirs < best):
                best = theirs
        return best

    def handle_timer(self, now: int) -> None:
        """Run every deadline due at ``now``."""
        if self.state is State.CLOSED:
            return
        for timer in self._deadlines.due(now):
            if self._is_closed():
                return
            if not self._deadlines.is_due(timer, now):
                continue  # an earlier handler of this round cancelled or moved it
            self._deadlines.cancel(timer)
            if timer is _Timer.CONNECTION:
                self._emit(ConnectionTimeout)
                self._fail(now, "Connection timeout")
            elif timer is _Timer.HANDSHAKE:
                bound = self.config.handshake_timeout_ms
                self._fail(now, f"No ICE connection within {bound} ms of the answer")
            elif timer is _Timer.GATHERING:
                self._emit(IceGatheringTimeout)
            elif timer is _Timer.RECONNECT:
                if self._paused:
                    self._deferred = _Deferred.ATTEMPT
                else:
                    self._attempt(now)
            elif timer is _Timer.PROBE:
                self._probe()
            elif timer is _Timer.RESUME:
                self._report_unacked("the peer did not come back in time")
                self._give_up()
            else:
                self._expire_buffer(now)
        if self._exchange is not None and not self._is_closed():
            self._exchange.handle_timer(now)
        if self._delivery is not None and not self._is_closed():
            self._delivery.handle_timer(now)
            self._pump(now)

    def _is_closed(self) -> bool:
        # A method, not an inline test: handlers change ``state`` behind mypy's narrowing.
        return self.state is State.CLOSED

    def next_action(self) -> Action | None:
        """The oldest queued action, or None."""
        return self._outbox.next_action()

    def next_event(self) -> Event | None:
        """The oldest queued event, or None."""
        return self._outbox.next_event()

    @property
    def outbox(self) -> Outbox:
        """Where this connection queues its output."""
        return self._outbox

    @property
    def pc_id(self) -> int | None:
        """The current peer connection, if any."""
        return self._pc

    @property
    def offer_id(self) -> str | None:
        """The offer this attempt is built on, once known."""
        return self._offer_id

    @property
    def offer_sdp(self) -> str | None:
        """Offerer: the local offer, once `LocalDescriptionReady` reported it."""
        return self._local_sdp if self.role is Role.OFFERER else None

    @property
    def terminal(self) -> bool:
        """True once nothing more will happen without a `Close` (FAILED for good, CLOSED)."""
        return self.state is State.CLOSED or self._terminal

    @property
    def buffered(self) -> int:
        """How many messages wait in the buffer."""
        return len(self._buffer)

    @property
    def delivery(self) -> DeliverySession | None:
        """The session layer's machine, once a session exists (read-only use)."""
        return self._delivery

    @property
    def session_token(self) -> str | None:
        """The id of this connection's session, once one is negotiated."""
        return self._session_token

    def can_send(self, size: int) -> bool:
        """Whether a message of ``size`` bytes would be accepted without waiting:
        always outside the session layer, else when the window has room."""
        return self._delivery is None or self._delivery.has_room(size)

    # -- offerer interface (used by the pool) -------------------------------------------

    def start_offer(self, now: int) -> None:
        """Offerer: create the peer connection, its data channel and the offer."""
        if self.role is not Role.OFFERER or self._started:
            raise UsageError("start_offer: only once, on an offerer")
        self._started = True
        pc = self._new_pc(now, offer_id=None)
        self._outbox.act(
            CreateDataChannel(
                pc_id=pc, label=self.config.data_channel_label, options=self.config.data_channel
            )
        )
        self._outbox.act(CreateOffer(pc_id=pc))
        self._set_state(State.GATHERING)

    def offer_published(self, offer_id: str, now: int) -> None:
        """Offerer: the offer is on the server as ``offer_id`` (again, after a republish)."""
        if self._exchange is None or self.state is State.CLOSED:
            return
        first = self._offer_id is None
        self._offer_id = offer_id
        self._exchange.handle(EnableUploads(offer_id=offer_id))
        if first:
            if self.state is State.GATHERING:
                self._set_state(State.SIGNALING)
                self._maybe_connected(now)
        else:
            self._exchange.handle(ReuploadCandidates())

    def apply_answer(self, sdp: str, answerer_id: str, now: int) -> bool:
        """Offerer: apply the peer's answer; False when it cannot be applied (already
        answered, or the connection is no longer waiting for one)."""
        if self.answer_applied or self.state is not State.SIGNALING or self._pc is None:
            return False
        assert self._exchange is not None
        assert self._offer_id is not None
        self.answer_applied = True
        self.answerer_id = answerer_id
        remote = None if self._epoch is None else read_session_attribute(sdp)
        self._layered = remote is not None
        self._plain_limit = remote_max_message_size(sdp)
        if remote is not None:
            self._session_token = remote.token
        self._outbox.act(SetRemoteDescription(pc_id=self._pc, type="answer", sdp=sdp))
        self._outbox.emit(
            AnswerProcessed(
                connection_id=self.connection_id, offer_id=self._offer_id, answerer_id=answerer_id
            )
        )
        self._deadlines.set(_Timer.CONNECTION, now + self.config.connection_timeout_ms)
        self._arm_handshake(now)
        self._exchange.handle(StartPolling(now=now, remote_sdp=sdp))
        return True

    def resume_with(self, fresh: Connection, now: int) -> None:
        """Offerer: the peer of this session answered ``fresh``'s offer: take over its
        peer connection and signaling, drop ours if any, and close ``fresh``.

        The pool calls it before `apply_answer`, when the answer names this
        connection's session.  What this session had not delivered is retransmitted
        once the new data channel opens."""
        if self.state is State.CLOSED or fresh._pc is None or fresh is self:
            raise UsageError("resume_with: needs a live connection and a fresh offer")
        if self.state is State.CONNECTED:
            self._set_state(State.DISCONNECTED, "The peer reconnected")
            self._emit(Disconnected, reason="The peer reconnected")
        self._teardown()
        self._deadlines.cancel(_Timer.RESUME)
        self._terminal = False
        self._pc, fresh._pc = fresh._pc, None
        self._exchange, fresh._exchange = fresh._exchange, None
        if self._exchange is not None:
            self._exchange.connection_id = self.connection_id
        self._offer_id, fresh._offer_id = fresh._offer_id, None
        self._local_sdp = fresh._local_sdp
        self._stale.update(fresh._stale)
        self._ice_ok = self._channel_open = False
        self.answer_applied = False
        self._set_state(State.SIGNALING, "Resuming the session")
        fresh._deadlines.clear()
        fresh._set_state(State.CLOSED, "Resumed an earlier session")
        fresh._emit(Closed, reason="Resumed an earlier session")

    # -- helpers ----------------------------------------------------------------------

    def _emit(self, cls: Any, **fields: Any) -> None:
        self._outbox.emit(cls(connection_id=self.connection_id, **fields))

    def _violation(self, text: str) -> None:
        self._outbox.emit(
            ProtocolViolation(connection_id=self.connection_id, error=ProtocolError(text))
        )

    def _set_state(self, new: State, reason: str | None = None) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        self._outbox.emit(
            StateChanged(
                connection_id=self.connection_id, old=old.value, new=new.value, reason=reason
            )
        )
        if new is State.CONNECTING:
            self._emit(Connecting)

    def owns_call(self, call_id: int) -> bool:
        """True when the result of ``call_id`` belongs to this connection (even if stale)."""
        return self._owns_call(call_id) or call_id in self._stale

    def outstanding_calls(self) -> set[int]:
        """Every call of this connection whose result has not been fed back yet."""
        calls = set(self._calls) | self._stale
        if self._exchange is not None:
            calls.update(self._exchange.calls_in_flight())
        return calls

    def _owns_call(self, call_id: int) -> bool:
        if call_id in self._calls:
            return True
        return self._exchange is not None and self._exchange.owns(call_id)

    def _call(self, purpose: _Call, request: RpcRequest) -> None:
        call_id = self._outbox.new_id()
        self._calls[call_id] = purpose
        self._outbox.act(SendRpc(call_id=call_id, request=request))

    def _new_pc(self, now: int, offer_id: str | None) -> int:
        pc = self._outbox.new_id()
        self._pc = pc
        self._ice_ok = False
        self._channel_open = False
        self._local_sdp = None
        self._outbox.act(
            CreatePeerConnection(
                pc_id=pc,
                ice=self.config.ice,
            )
        )
        self._exchange = IceExchange(
            outbox=self._outbox,
            config=self.config,
            connection_id=self.connection_id,
            pc_id=pc,
            service_fqn=str(self.service),
            offer_id=offer_id,
        )
        self._deadlines.set(_Timer.GATHERING, now + self.config.ice_gathering_timeout_ms)
        return pc

    def _arm_handshake(self, now: int) -> None:
        """The answer is on both sides: a live peer connects within the handshake bound,
        so an attempt on a dead offer (its owner gone) fails in seconds, not at the
        connection timeout."""
        if self.config.handshake_timeout_ms > 0:
            self._deadlines.set(_Timer.HANDSHAKE, now + self.config.handshake_timeout_ms)

    def _teardown(self, linger_ms: int = 0) -> None:
        """Close the current peer connection and forget everything tied to it;
        ``linger_ms`` lets what was already sent on it leave first."""
        self._stale.update(self._calls)
        self._calls.clear()
        self._deadlines.cancel(_Timer.CONNECTION)
        self._deadlines.cancel(_Timer.HANDSHAKE)
        self._deadlines.cancel(_Timer.GATHERING)
        if self._pc is None and self._exchange is None:
            return
        self._emit(CleanupStarted)
        if self._exchange is not None:
            # Stopped first: a held poll is then cancelled, so it is not left waiting
            # among the stale calls for a result that will never come.
            self._exchange.handle(StopPolling())
            self._stale.update(self._exchange.calls_in_flight())
            self._exchange.handle(EndExchange())
            self._exchange = None
        if self._pc is not None:
            self._outbox.act(ClosePeerConnection(pc_id=self._pc, linger_ms=linger_ms))
            self._pc = None
        self._ice_ok = False
        self._channel_open = False
        self._early_frames = []
        self._channel_down(0)
        self._emit(CleanupComplete)

    # -- attempts, failure, reconnection ---------------------------------------------

    def _attempt(self, now: int) -> None:
        """Answerer: start an attempt (the first one, or a reconnection)."""
        self._teardown()
        self._deadlines.cancel(_Timer.PROBE)
        if self._reconnect_attempt:
            self._emit(ReconnectAttempting, attempt=self._reconnect_attempt)
        self._set_state(State.INITIALIZING)
        self._offer_id = None
        self._deadlines.set(_Timer.CONNECTION, now + self.config.connection_timeout_ms)
        self._call(
            _Call.FETCH_OFFER,
            RpcRequest(
                method=Method.GET_SERVICE,
                params={"serviceFqn": str(self.service)},
                urgency=Urgency.URGENT,  # the first step of the handshake
            ),
        )

    def _fail(self, now: int, error: str) -> None:
        """End the current attempt (or established link) with ``error``."""
        if self.state in (State.DISCONNECTED, State.RECONNECTING):
            # The link was already lost (soft drop); finish off the old peer connection.
            self._teardown()
            if self.state is State.DISCONNECTED and self._deferred is None:
                self._set_state(State.FAILED, error)
                self._emit(Failed, error=error, final=self._loss_is_final())
                self._after_loss(now)
            return
        was_up = self.state is State.CONNECTED
        self._teardown()
        if was_up:
            self._set_state(State.DISCONNECTED, error)
            self._emit(Disconnected, reason=error)
        elif self._reconnect_attempt:
            self._emit(ReconnectFailed, error=error)
        self._set_state(State.FAILED, error)
        self._emit(Failed, error=error, final=self._loss_is_final())
        self._after_loss(now)

    def _loss_is_final(self) -> bool:
        """Whether `_after_loss` will give up: the ``failed`` event says so in advance."""
        if self._permanent:
            return True
        if self.role is Role.OFFERER:
            return self._delivery is None
        return not self.config.reconnect_enabled or self._backoff.exhausted

    def _after_loss(self, now: int) -> None:
        """After a failure or drop: schedule a reconnection, defer it, or give up."""
        if self.role is Role.OFFERER and self._delivery is not None and not self._permanent:
            # The peer comes back through a new offer of our pool (`resume_with`).
            assert self.config.session is not None
            self._set_state(State.RECONNECTING, "Waiting for the peer to resume")
            self._deadlines.set(_Timer.RESUME, now + self.config.session.resume_timeout_ms)
        elif self.role is Role.OFFERER or not self.config.reconnect_enabled or self._permanent:
            self._give_up()
        elif self._backoff.exhausted:
            self._emit(ReconnectExhausted, attempts=self._backoff.attempt)
            self._give_up()
        elif self._paused:
            self._deferred = _Deferred.SCHEDULE
        else:
            self._schedule(now)

    def _arm_probe(self, now: int) -> None:
        """While a long backoff runs, look for the service now and then (the first
        step of an attempt, alone), so a link restored meanwhile is used at once."""
        interval = self.config.reconnect_probe_interval_ms
        due = self._deadlines.next_of(_Timer.RECONNECT)
        if interval and due is not None and due - now > interval:
            self._deadlines.set(_Timer.PROBE, now + interval)
        else:
            self._deadlines.cancel(_Timer.PROBE)

    def _probe(self) -> None:
        if self.state is not State.RECONNECTING or self._paused:
            return
        self._call(
            _Call.PROBE,
            RpcRequest(method=Method.GET_SERVICE, params={"serviceFqn": str(self.service)}),
        )

    def _on_probed(self, now: int, outcome: Any) -> None:
        """A probe found the service: attempt now with its offer; else wait on."""
        if self.state is not State.RECONNECTING or self._paused:
            return
        if isinstance(outcome, RpcFailed):
            self._arm_probe(now)
            return
        self._deadlines.cancel(_Timer.RECONNECT)
        self._teardown()  # a softly dropped link may still hold its peer connection
        self._emit(ReconnectAttempting, attempt=self._reconnect_attempt)
        self._set_state(State.INITIALIZING)
        self._offer_id = None
        self._deadlines.set(_Timer.CONNECTION, now + self.config.connection_timeout_ms)
        self._on_offer_fetched(now, outcome.result)

    def _give_up(self) -> None:
        self._terminal = True
        self._deadlines.clear()
        if not self.config.preserve_buffer_on_close:
            self._report_unacked("the connection failed for good")
            self._drop_buffer()
        # Otherwise the buffer waits, unexpired, for `Close` to hand it back as ``unsent``.
        if self.state is not State.FAILED:
            self._set_state(State.FAILED, "no reconnection")
            self._emit(Failed, error="Connection lost", final=True)

    def _schedule(self, now: int) -> None:
        delay = self._backoff.next_delay(self._random())
        assert delay is not None  # exhaustion is checked by the caller
        if self._silent_loss and self._backoff.attempt == 1:
            # The heartbeat already waited out its timeout: the first attempt goes at
            # once (later ones back off as usual, if the network is really gone).
            delay = 0
        self._silent_loss = False
        self._reconnect_attempt = self._backoff.attempt
        self._set_state(State.RECONNECTING)
        self._deadlines.set(_Timer.RECONNECT, now + delay)
        self._arm_probe(now)
        self._emit(
            ReconnectScheduled,
            attempt=self._reconnect_attempt,
            delay=delay,
            max_attempts=self._backoff.policy.max_attempts,
        )

    def _soft_drop(self, now: int, reason: str) -> None:
        """ICE disconnected on an established link: keep the pc, arm the reconnection."""
        self._ice_ok = False
        self._channel_down(now)
        self._set_state(State.DISCONNECTED, reason)
        self._emit(Disconnected, reason=reason)
        if self.role is Role.ANSWERER and self.config.reconnect_enabled:
            if self._backoff.exhausted:
                self._emit(ReconnectExhausted, attempts=self._backoff.attempt)
                self._teardown()
                self._give_up()
            elif self._paused:
                self._deferred = _Deferred.SCHEDULE
            else:
                self._schedule(now)
        # Otherwise wait in DISCONNECTED: ICE may recover, or fail for good.

    def _maybe_connected(self, now: int) -> None:
        if self.state in (State.GATHERING, State.CONNECTED):
            return  # GATHERING: re-checked once our description is out
        if not (self._ice_ok and self._channel_open):
            if (self._ice_ok or self._channel_open) and self.state in (
                State.SIGNALING,
                State.CHECKING,
            ):
                self._set_state(State.CONNECTING)
            return
        recovered = self.state in (State.DISCONNECTED, State.RECONNECTING)
        self._deadlines.cancel(_Timer.CONNECTION)
        self._deadlines.cancel(_Timer.HANDSHAKE)
        self._deadlines.cancel(_Timer.GATHERING)  # moot once connected
        self._deadlines.cancel(_Timer.RECONNECT)
        self._deadlines.cancel(_Timer.PROBE)
        self._deferred = None
        self._set_state(State.CONNECTED)
        self._emit(Connected)
        if self._reconnect_attempt and not recovered:
            self._emit(ReconnectSuccess, attempt=self._reconnect_attempt)
        self._reconnect_attempt = 0
        self._backoff.reset()
        if self._layered:
            assert self.config.session is not None
            if self._delivery is None:
                self._delivery = DeliverySession(self.config.session, peer_limit=self._plain_limit)
            self._delivery.handle(ChannelUp(now=now))
            early, self._early_frames = self._early_frames, []
            for data in early:
                self._delivery.handle(FrameReceived(now=now, data=data))
            self._pump(now)
            held, self._held = self._held, []
            for data, at in held:
                self._emit(MessageReplayed, data=data, buffered_at=at)
        self._replay(now)

    # -- buffer ----------------------------------------------------------------------

    def _replay(self, now: int) -> None:
        fresh, expired = self._buffer.drain(now)
        self._deadlines.cancel(_Timer.BUFFER)
        for message in expired:
            self._emit(MessageBufferExpired, data=message.data)
        pc = self._pc
        assert pc is not None
        for message in fresh:
            if self._delivery is None and self._too_big(message.data):
                self._emit(
                    MessagesUndelivered,
                    messages=(message.data,),
                    reason="larger than the peer accepts",
                )
                continue
            if self._delivery is not None:
                if not self._delivery.has_room(_size(message.data)):
                    self._emit(
                        MessagesUndelivered, messages=(message.data,), reason="send window full"
                    )
                    continue
                self._delivery.handle(SendPayload(now=now, data=message.data))
                self._pump(now)
            else:
                self._outbox.act(SendData(pc_id=pc, data=message.data))
            self._emit(MessageReplayed, data=message.data, buffered_at=message.buffered_at)

    def _arm_buffer_timer(self) -> None:
        oldest = next(iter(self._buffer), None)
        if oldest is None:
            self._deadlines.cancel(_Timer.BUFFER)
        else:
            self._deadlines.set(_Timer.BUFFER, oldest.buffered_at + self._buffer.max_age_ms + 1)

    def _expire_buffer(self, now: int) -> None:
        for message in self._buffer.expire(now):
            self._emit(MessageBufferExpired, data=message.data)
        self._arm_buffer_timer()

    def _drop_buffer(self) -> None:
        self._buffer.clear()
        self._deadlines.cancel(_Timer.BUFFER)

    # -- session layer -----------------------------------------------------------------

    def _pump(self, now: int) -> None:
        """Turn what the session machine produced into actions and events."""
        while (delivery := self._delivery) is not None:
            while (action := delivery.next_action()) is not None:
                assert isinstance(action, Transmit)
                if self._pc is not None:
                    self._outbox.act(SendData(pc_id=self._pc, data=action.data))
            while (event := delivery.next_event()) is not None:
                if isinstance(event, Delivered):
                    self._emit(Message, data=event.data)
                elif isinstance(event, Acknowledged):
                    self._emit(MessagesAcked, count=event.count)
                elif isinstance(event, FrameRejected):
                    self._outbox.emit(
                        ProtocolViolation(connection_id=self.connection_id, error=event.error)
                    )
                elif isinstance(event, PeerReset):
                    self._restart_session(now, delivery)
                    break  # the new session's output, on the next round
                elif isinstance(event, PeerSilent) and self.state is State.CONNECTED:
                    self._silent_loss = True
                    self._fail(now, "Heartbeat timeout: nothing heard from the peer")
                    self._silent_loss = False
            if self._delivery is delivery:
                return

    def _restart_session(self, now: int, old: DeliverySession) -> None:
        """The peer lost our session (it gave it up, or its pool started again): end
        ours as for a new process, and go on with a new one on the same channel."""
        assert self.config.session is not None
        reason = "the peer lost the session"
        unacked = list(old.unacked())
        data = tuple(u.data for u in unacked)
        resend = self.config.session.on_peer_reset == "resend"
        self._emit(SessionReset, unacked=data, resent=resend, reason=reason)
        fresh = DeliverySession(self.config.session, peer_limit=self._plain_limit)
        self._delivery = fresh
        self._held = []
        if self._channel_open:
            fresh.handle(ChannelUp(now=now))
        if not resend:
            if data:
                maybe = any(u.transmitted for u in unacked)
                self._emit(MessagesUndelivered, messages=data, reason=reason, maybe_delivered=maybe)
            return
        for item in data:
            if fresh.has_room(_size(item)):
                fresh.handle(SendPayload(now=now, data=item))
            else:  # cannot happen with one config for both, kept for safety
                self._emit(MessagesUndelivered, messages=(item,), reason="send window full")

    def _channel_down(self, now: int) -> None:
        if self._delivery is not None and self._delivery.channel_up:
            self._delivery.handle(ChannelDown(now=now))

    def _too_big(self, data: Payload) -> bool:
        return self._plain_limit is not None and _size(data) > self._plain_limit

    def _new_token(self) -> str:
        # 104 bits from the injected source: unique enough for ids nobody guesses at.
        return "".join(f"{int(self._random() * 2**52):013x}" for _ in range(2))

    def _report_unacked(self, reason: str) -> None:
        """Report everything held (buffer and session window) as undelivered."""
        held = [m.data for m in self._buffer]
        self._drop_buffer()
        maybe = False
        if self._delivery is not None:
            unacked = list(self._delivery.unacked())
            held = [u.data for u in unacked] + held
            maybe = any(u.transmitted for u in unacked)
            self._delivery = None
            self._held = []
        if held:
            self._emit(
                MessagesUndelivered, messages=tuple(held), reason=reason, maybe_delivered=maybe
            )

    def _negotiate(self, now: int, offer_sdp: str) -> None:
        """Answerer: decide from the fetched offer whether this attempt uses the layer,
        and end the old session when the offer comes from another process."""
        remote = None if self.config.session is None else read_session_attribute(offer_sdp)
        old = self._delivery
        if old is not None and (remote is None or remote.token != self._peer_token):
            reason = (
                "the peer no longer speaks the session layer"
                if remote is None
                else "the peer is a new process"
            )
            assert self.config.session is not None
            resend = self.config.session.on_peer_reset == "resend"
            unacked = list(old.unacked())
            data = tuple(u.data for u in unacked)
            self._delivery = None
            self._held = []
            self._session_token = None
            self._emit(SessionReset, unacked=data, resent=resend, reason=reason)
            if resend:
                # Ahead of anything buffered since: they were sent first.
                held = list(self._buffer.clear())
                for item in (*data, *(m.data for m in held)):
                    _, evicted = self._buffer.add(item, now)
                    for message in evicted:
                        self._emit(MessageBufferOverflow, data=message.data)
                self._arm_buffer_timer()
            elif data:
                self._emit(
                    MessagesUndelivered,
                    messages=data,
                    reason=reason,
                    maybe_delivered=any(u.transmitted for u in unacked),
                )
        self._layered = remote is not None
        self._plain_limit = remote_max_message_size(offer_sdp)
        if remote is not None:
            self._peer_token = remote.token
            if self._session_token is None:
                self._session_token = self._new_token()

    # -- command handlers ------------------------------------------------------------

    def _on_connect(self, event: Input) -> None:
        if self.role is not Role.ANSWERER or self._started:
            raise UsageError("connect: only once, on an answerer")
        self._started = True
        self._attempt(event.now)

    def _on_send(self, event: SendMessage) -> None:
        data = event.data
        if self._delivery is not None:
            self._send_in_session(self._delivery, event)
            return
        if self.state is State.CONNECTED:
            assert self._pc is not None
            if self._too_big(data):
                # aiortc would refuse it inside the driver and fail the whole link.
                raise UsageError(
                    f"send: a message of {_size(data)} bytes is larger than the peer "
                    f"accepts ({self._plain_limit} bytes); only the session layer chunks"
                )
            self._outbox.act(SendData(pc_id=self._pc, data=data))
            self._emit(MessageSent, data=data, buffered=False)
            return
        if self._terminal:
            raise UsageError("send: the connection has failed for good")
        if not self.config.buffer_enabled:
            raise UsageError("send: not connected and buffering is disabled")
        _, evicted = self._buffer.add(data, event.now)
        for message in evicted:
            self._emit(MessageBufferOverflow, data=message.data)
        if self._buffer.max_size == 0:
            return  # nothing can be held: the message itself was the overflow
        self._emit(MessageBuffered, data=data)
        self._emit(MessageSent, data=data, buffered=True)
        if _Timer.BUFFER not in self._deadlines:
            self._arm_buffer_timer()

    def _send_in_session(self, delivery: DeliverySession, event: SendMessage) -> None:
        data = event.data
        if self._terminal:
            raise UsageError("send: the connection has failed for good")
        if self.state is not State.CONNECTED and not self.config.buffer_enabled:
            raise UsageError("send: not connected and buffering is disabled")
        assert self.config.session is not None
        if not delivery.has_room(_size(data)):
            if self.config.session.on_window_full == "raise":
                raise WindowFullError(
                    f"send window full ({delivery.unacked_messages} messages, "
                    f"{delivery.unacked_bytes} bytes unacknowledged)"
                )
            self._emit(MessagesUndelivered, messages=(data,), reason="send window full")
            return
        delivery.handle(SendPayload(now=event.now, data=data))
        self._pump(event.now)
        held = self.state is not State.CONNECTED
        if held:
            self._held.append((data, event.now))
            self._emit(MessageBuffered, data=data)
        self._emit(MessageSent, data=data, buffered=held)

    def _on_close(self, event: Any) -> None:
        # Only an open channel can hold messages on their way out.
        self._teardown(self.config.close_linger_ms if self._channel_open else 0)
        self._deadlines.clear()
        unsent: tuple[Payload, ...] = ()
        if self.config.preserve_buffer_on_close:
            unacked = () if self._delivery is None else tuple(self._delivery.unacked())
            unsent = tuple(u.data for u in unacked) + tuple(m.data for m in self._buffer.clear())
            self._delivery = None
            self._held = []
        else:
            self._report_unacked("closed before delivery was confirmed")
        self._buffer.clear()
        self._set_state(State.CLOSED, event.reason)
        self._emit(Closed, reason=event.reason, unsent=unsent)

    def _on_pause(self, event: Input) -> None:
        self._paused = True

    def _on_resume(self, event: Input) -> None:
        self._paused = False
        deferred, self._deferred = self._deferred, None
        if deferred is _Deferred.ATTEMPT:
            self._attempt(event.now)
        elif deferred is _Deferred.SCHEDULE:
            self._after_loss(event.now)

    # -- peer report handlers ----------------------------------------------------------

    def _on_local_description(self, event: LocalDescriptionReady) -> None:
        if self._local_sdp is not None:
            self._violation("local description reported twice")
            return
        assert self._exchange is not None
        assert self._pc is not None
        self._local_sdp = event.sdp
        if self.role is Role.OFFERER and self._epoch is not None and looks_like_sdp(event.sdp):
            self._local_sdp = add_session_attribute(event.sdp, self._epoch())
        self._exchange.handle(event)
        if event.complete:
            self._deadlines.cancel(_Timer.GATHERING)
        if self.role is Role.ANSWERER:
            assert self._offer_id is not None
            sdp = event.sdp
            if self._layered and self._session_token is not None:
                sdp = add_session_attribute(sdp, self._session_token)
            self._call(
                _Call.ANSWER,
                RpcRequest(
                    method=Method.ANSWER_OFFER,
                    params={
                        "serviceFqn": str(self.service),
                        "offerId": self._offer_id,
                        "sdp": sdp,
                    },
                    urgency=Urgency.URGENT,  # the offerer waits for it
                ),
            )
            self._set_state(State.SIGNALING)
            self._maybe_connected(event.now)

    def _on_remote_description_set(self, event: RemoteDescriptionSet) -> None:
        assert self._exchange is not None
        self._exchange.handle(event)

    def _on_local_candidate(self, event: LocalCandidate) -> None:
        assert self._exchange is not None
        self._emit(IceCandidateLocal, candidate=event.candidate)
        self._exchange.handle(event)

    def _on_gathering_state(self, event: IceGatheringStateChanged) -> None:
        self._emit(IceGatheringState, state=event.state)
        if event.state == "complete":
            self._deadlines.cancel(_Timer.GATHERING)
            self._emit(IceCandidateLocal, candidate=None)

    def _on_ice_state(self, event: IceConnectionStateChanged) -> None:
        state = event.state
        self._emit(IceConnectionState, state=state)
        if state in ("connected", "completed"):
            self._ice_ok = True
            if self._exchange is not None:
                self._exchange.handle(StopPolling())  # every needed candidate is in (B12)
            self._maybe_connected(event.now)
        elif state == "checking":
            if self.state is State.SIGNALING:
                self._set_state(State.CHECKING)
        elif state == "disconnected":
            if self.state is State.CONNECTED:
                self._soft_drop(event.now, "ICE disconnected")
            else:
                self._ice_ok = False
        elif state == "failed":
            self._fail(event.now, "ICE connection failed")
        elif state == "closed":
            self._fail(event.now, "ICE transport closed")

    def _on_pc_state(self, event: PeerConnectionStateChanged) -> None:
        self._emit(PeerConnectionState, state=event.state)
        if event.state == "failed":
            self._fail(event.now, "Peer connection failed")
        elif event.state == "closed":
            # Not asked for (a pc we closed is no longer current): the peer vanished.
            self._fail(event.now, "Peer connection closed")
        elif event.state == "disconnected" and self.state is State.CONNECTED:
            self._soft_drop(event.now, "Peer connection disconnected")

    def _on_channel_open(self, event: Input) -> None:
        if self._channel_open:
            return  # a message reported before the open already counted as the open
        self._channel_open = True
        self._emit(ChannelOpened)
        self._maybe_connected(event.now)

    def _on_channel_closed(self, event: Input) -> None:
        self._channel_open = False
        self._emit(ChannelClose)
        self._fail(event.now, "Data channel closed")

    def _on_channel_message(self, event: ChannelMessage) -> None:
        if not self._channel_open:
            # Data arrives only on an open channel: the stack reported the open late
            # (its reports are not ordered across channel and transport).
            self._on_channel_open(event)
        if self._layered:
            if self._delivery is not None and self._delivery.channel_up:
                self._delivery.handle(FrameReceived(now=event.now, data=event.data))
                self._pump(event.now)
            elif len(self._early_frames) < _EARLY_FRAMES_MAX:
                # The peer saw the link up before our side did (ICE not yet reported):
                # these frames are the session's, never messages for the application.
                self._early_frames.append(event.data)
            else:
                self._violation("too many frames before the link was up; frame dropped")
            return
        self._emit(Message, data=event.data)

    def _on_channel_error(self, event: ChannelError) -> None:
        self._emit(ChannelErrorEvent, error=event.error)

    def _on_peer_error(self, event: PeerError) -> None:
        self._fail(event.now, f"{event.operation} failed: {event.error}")

    def _on_candidate_rejected(self, event: RemoteCandidateRejected) -> None:
        # One bad candidate from the other side does not doom the attempt: others may
        # work, and the connection timeout still bounds it.  Reported, never swallowed.
        self._emit(IceCandidateRejected, reason=event.reason)

    # -- RPC results -----------------------------------------------------------------

    def _on_rpc_result(self, event: RpcResult) -> None:
        purpose = self._calls.pop(event.call_id, None)
        if purpose is None:
            assert self._exchange is not None
            self._exchange.handle(event)
            return
        outcome = event.outcome
        if purpose is _Call.PROBE:
            self._on_probed(event.now, outcome)
        elif (
            isinstance(outcome, RpcFailed)
            and purpose is _Call.ANSWER
            and self.state in (State.CONNECTED, State.DISCONNECTED, State.RECONNECTING)
        ):
            # The link came up on this answer, so the peer has it: only the reply was
            # lost (a transport timeout).  Failing now would tear down a working link.
            self._emit(SignalingError, operation=purpose.value, error=outcome.error)
        elif isinstance(outcome, RpcFailed):
            if is_permanent(outcome):
                self._permanent = True
                kind = classify(outcome.error).value
                self._emit(PermanentError, operation=purpose.value, error=outcome.error, kind=kind)
            self._fail(event.now, f"{purpose.value} failed: {outcome.error}")
        elif purpose is _Call.FETCH_OFFER:
            self._on_offer_fetched(event.now, outcome.result)
        else:
            if self.state in _HANDSHAKE:
                self._arm_handshake(event.now)
            if self._exchange is not None and self._offer_id is not None:
                self._exchange.handle(EnableUploads(offer_id=self._offer_id))

    def _on_offer_fetched(self, now: int, result: object) -> None:
        try:
            offer = parse_fetched_offer(result)
        except ProtocolError as error:
            self._outbox.emit(ProtocolViolation(connection_id=self.connection_id, error=error))
            self._fail(now, f"getService failed: {error}")
            return
        if self.service.username is None and offer.username is not None:
            # Discovery picked a publisher: reconnections go back to the same one (B13).
            self.service = self.service.with_username(offer.username)
        self._offer_id = offer.offer_id
        self._emit(OfferFetched, offer_id=offer.offer_id, username=self.service.username)
        self._negotiate(now, offer.sdp)
        pc = self._new_pc(now, offer_id=offer.offer_id)
        self._outbox.act(SetRemoteDescription(pc_id=pc, type="offer", sdp=offer.sdp))
        self._outbox.act(CreateAnswer(pc_id=pc))
        self._set_state(State.GATHERING)
        assert self._exchange is not None
        # Polling starts as soon as the offer id is known (B1).
        self._exchange.handle(StartPolling(now=now, remote_sdp=offer.sdp))


def _table() -> dict[tuple[State, InputKind], Handler]:
    c = Connection
    k = InputKind
    rows: list[tuple[frozenset[State], InputKind, Handler]] = [
        (frozenset({S.INITIALIZING}), k.CONNECT, c._on_connect),
        (_LIVE, k.SEND, c._on_send),
        (_LIVE, k.CLOSE, c._on_close),
        (_LIVE, k.PAUSE_RECONNECT, c._on_pause),
        (_LIVE, k.RESUME_RECONNECT, c._on_resume),
        (frozenset({S.GATHERING}), k.LOCAL_DESCRIPTION, c._on_local_description),
        (_HANDSHAKE, k.REMOTE_DESCRIPTION_SET, c._on_remote_description_set),
        (_PC_ALIVE, k.LOCAL_CANDIDATE, c._on_local_candidate),
        (_PC_ALIVE, k.ICE_GATHERING_STATE, c._on_gathering_state),
        (_PC_ALIVE, k.ICE_CONNECTION_STATE, c._on_ice_state),
        (_PC_ALIVE, k.PEER_CONNECTION_STATE, c._on_pc_state),
        (_PC_ALIVE, k.CHANNEL_OPEN, c._on_channel_open),
        (_PC_ALIVE, k.CHANNEL_CLOSED, c._on_channel_closed),
        (_PC_ALIVE - {S.GATHERING}, k.CHANNEL_MESSAGE, c._on_channel_message),
        (_PC_ALIVE, k.CHANNEL_ERROR, c._on_channel_error),
        (_PC_ALIVE, k.PEER_ERROR, c._on_peer_error),
        (_PC_ALIVE, k.REMOTE_CANDIDATE_REJECTED, c._on_candidate_rejected),
        (_LIVE, k.RPC_RESULT, c._on_rpc_result),
    ]
    return {(state, kind): handler for states, kind, handler in rows for state in states}


TRANSITIONS: dict[tuple[State, InputKind], Handler] = _table()
"""Every accepted ``(state, input kind)`` and its handler; anything else is an error."""


def _size(data: Payload) -> int:
    return len(data.encode()) if isinstance(data, str) else len(data)
