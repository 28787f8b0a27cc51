"""`ConnectionBase`: the fields every layer of the connection shares, its queries and helpers.

The connection is one class built in layers, one module each, every layer using only
those below it: `base` (fields, queries, output helpers), `sending` (the send path),
`link` (the link's life: up, lost, reconnected), `attempts` (what each role does to
connect), `reports` (the driver's peer reports) and `table` (`Connection` itself: its
inputs, its timers and the transition table).  All fields are declared here, in
``__slots__``, so one place says what a connection holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rondevu_core.actions import CreatePeerConnection, SendData, SendRpc
from rondevu_core.buffer import MessageBuffer, Payload
from rondevu_core.config import ConnectionConfig
from rondevu_core.connection.states import Call, Deferred, Role, State, Timer
from rondevu_core.delivery.machine import DeliverySession
from rondevu_core.errors import ProtocolError
from rondevu_core.events import Connecting, ProtocolViolation, StateChanged
from rondevu_core.ice_exchange import IceExchange
from rondevu_core.inputs import ChannelAnnounced, ChannelInput
from rondevu_core.outbox import Deadlines, DrainsOutbox, Outbox
from rondevu_core.rpc import RpcRequest
from rondevu_core.rules.backoff import Backoff
from rondevu_core.rules.fqn import ServiceFqn


class ConnectionBase(DrainsOutbox):
    """What every layer of `Connection` builds on; see the module docstring."""

    __slots__ = (
        "_backoff",
        "_buffer",
        "_calls",
        "_channel",
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
        self._deadlines: Deadlines[Timer] = Deadlines()
        self._backoff = Backoff(config.backoff_policy())
        self._buffer = MessageBuffer(
            max_size=config.max_buffer_size, max_age_ms=config.max_buffer_age_ms
        )
        self._calls: dict[int, Call] = {}
        # Calls of abandoned attempts: their late results are expected and dropped.
        self._stale: set[int] = set()
        self._pc: int | None = None
        self._closing_pc = False
        self._exchange: IceExchange | None = None
        self._ice_ok = False
        self._channel: int | None = None
        """The driver's name of the data channel this connection speaks on (see
        `ChannelInput`), once reported."""
        self._channel_open = False
        self._local_sdp: str | None = None
        self._offer_id: str | None = None
        self._started = False
        self._paused = False
        self._deferred: Deferred | None = None
        self._reconnect_attempt = 0
        self._terminal = False
        # A permanent error (error_kinds) ends the connection: no reconnection can help.
        self._permanent = False
        self.answer_applied = False
        self.answerer_id: str | None = None
        """Offerer: the username that answered (from the first applied answer on)."""
        # The session layer (see the package docstring).
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

    def _is_closed(self) -> bool:
        # A method, not an inline test: handlers change ``state`` behind mypy's narrowing.
        return self.state is State.CLOSED

    @property
    def outbox(self) -> Outbox:
        """Where this connection queues its output."""
        return self._outbox

    @property
    def pc_id(self) -> int | None:
        """The current peer connection, if any."""
        return self._pc

    @property
    def channel(self) -> int | None:
        """The data channel this connection speaks on, by the driver's name for it
        (`ChannelInput.channel`), once one was reported on the current peer connection."""
        return self._channel

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

    def _call(self, purpose: Call, request: RpcRequest) -> None:
        call_id = self._outbox.new_id()
        self._calls[call_id] = purpose
        self._outbox.act(SendRpc(call_id=call_id, request=request))

    def _new_pc(self, now: int, offer_id: str | None) -> int:
        pc = self._outbox.new_id()
        self._pc = pc
        self._ice_ok = False
        self._channel = None
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
        self._deadlines.set(Timer.GATHERING, now + self.config.ice_gathering_timeout_ms)
        return pc

    def _arm_handshake(self, now: int) -> None:
        """The answer is on both sides: a live peer connects within the handshake bound,
        so an attempt on a dead offer (its owner gone) fails in seconds, not at the
        connection timeout."""
        if self.config.handshake_timeout_ms > 0:
            self._deadlines.set(Timer.HANDSHAKE, now + self.config.handshake_timeout_ms)

    def _adopts(self, report: ChannelInput) -> bool:
        """Whether ``report`` concerns this connection's data channel, choosing it if
        none is yet: the offerer speaks on the channel it created, the answerer on the
        first one the remote peer announced; a driver that announces nothing makes the
        first channel it reports the connection's.  Other channels are the peer's own."""
        if self._channel is None:
            if isinstance(report, ChannelAnnounced) and report.local != (self.role is Role.OFFERER):
                return False
            self._channel = report.channel
        return report.channel == self._channel

    def _send_data(self, data: Payload) -> None:
        """Queue ``data`` on the current peer connection's channel (open, so known)."""
        assert self._pc is not None
        assert self._channel is not None
        self._outbox.act(SendData(pc_id=self._pc, data=data, channel=self._channel))

    def _fail(self, now: int, error: str) -> None:
        """End the current attempt (or established link) with ``error``: `Link._fail`.
        Declared here because the send path fails the link when its session does."""
        raise NotImplementedError
