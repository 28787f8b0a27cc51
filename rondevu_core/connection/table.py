"""`Connection` itself: its inputs, its timers and its transition table.

`TRANSITIONS` maps every accepted ``(State, trigger)`` - the trigger an input's
`InputKind` or a `Timer` falling due - to a `Transition`: its handler, wherever it lives
(the layers of this package), the moves it may make and the states they lead to; `EDGES`
is the union of all moves.  `handle` looks
an input up; `handle_timer` looks up each of the connection's deadlines that is due,
then the ``SUBMACHINES`` row (the ICE exchange's and the delivery session's deadlines).
The tests hold every step to its row's ``leads_to``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rondevu_core.buffer import Payload
from rondevu_core.config import ConnectionConfig
from rondevu_core.connection.reports import PeerReports
from rondevu_core.connection.states import (
    ATTEMPT,
    CLOSING,
    DESCRIBED,
    FETCHED,
    GIVE_UP,
    HANDSHAKE,
    ICE_CHECKS,
    LIVE,
    LOSS,
    PC_ALIVE,
    PROGRESS,
    RESUMED,
    STAY,
    Call,
    Deferred,
    Move,
    Role,
    S,
    State,
    Timer,
)
from rondevu_core.errors import UsageError
from rondevu_core.events import (
    Closed,
    ConnectionTimeout,
    IceGatheringTimeout,
    PermanentError,
    SignalingError,
)
from rondevu_core.ice_exchange import EnableUploads
from rondevu_core.inputs import COMMAND_KINDS, ChannelInput, Input, InputKind, PeerInput, RpcResult
from rondevu_core.outbox import Outbox, earliest
from rondevu_core.rpc import RpcFailed
from rondevu_core.rules.error_kinds import classify, is_permanent
from rondevu_core.rules.fqn import ServiceFqn


class Connection(PeerReports):
    """One durable connection; see the `rondevu_core.connection` docstring.

    Build answerers with `Connection.answerer`; offer pools build offerers with
    `Connection.offerer`.  Drive with `handle`, `handle_timer`, `get_timer`, and drain
    `next_action` / `next_event` (or the shared `Outbox`)."""

    __slots__ = ()

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

    def handle(self, input: Input) -> None:
        """Consume one input; what it causes waits in the output queues."""
        kind = input.kind
        if self.state is State.CLOSED:
            if kind in COMMAND_KINDS and kind is not InputKind.CLOSE:
                raise UsageError(f"{kind.value}: the connection is closed")
            return
        if isinstance(input, PeerInput) and input.pc_id != self._pc:
            return
        if isinstance(input, ChannelInput) and not self._adopts(input):
            return
        if isinstance(input, RpcResult) and not self._owns_call(input.call_id):
            if input.call_id in self._stale:
                self._stale.discard(input.call_id)
                return
            raise UsageError(f"unknown call id {input.call_id}")
        row = TRANSITIONS.get((self.state, kind))
        if row is None:
            if kind in COMMAND_KINDS:
                raise UsageError(f"{kind.value} is not allowed in state {self.state.value}")
            self._violation(f"{kind.value} is not expected in state {self.state.value}")
            return
        row.handler(self, input)

    def get_timer(self) -> int | None:
        """The next deadline (monotonic ms, the clock of ``now``), or None if none."""
        return earliest(
            self._deadlines.next(),
            None if self._exchange is None else self._exchange.get_timer(),
            None if self._delivery is None else self._delivery.get_timer(),
        )

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
            TRANSITIONS[self.state, timer].handler(self, now)  # every live state has a row
        if not self._is_closed():
            TRANSITIONS[self.state, Timer.SUBMACHINES].handler(self, now)

    # -- timer handlers: each takes ``now`` --------------------------------------------

    def _on_connection_timeout(self, now: int) -> None:
        self._emit(ConnectionTimeout)
        self._fail(now, "Connection timeout")

    def _on_handshake_timeout(self, now: int) -> None:
        bound = self.config.handshake_timeout_ms
        self._fail(now, f"No ICE connection within {bound} ms of the answer")

    def _on_gathering_timeout(self, now: int) -> None:
        self._emit(IceGatheringTimeout)  # trickling goes on

    def _on_reconnect_due(self, now: int) -> None:
        if self._paused:
            self._deferred = Deferred.ATTEMPT
        else:
            self._attempt(now)

    def _on_probe_due(self, now: int) -> None:
        self._probe()

    def _on_resume_timeout(self, now: int) -> None:
        self._report_unacked("the peer did not come back in time")
        self._give_up()

    def _on_buffer_due(self, now: int) -> None:
        self._expire_buffer(now)

    def _on_submachines_due(self, now: int) -> None:
        if self._exchange is not None:
            self._exchange.handle_timer(now)
        if self._delivery is not None:
            self._delivery.handle_timer(now)
            self._pump(now)  # a silent peer (heartbeat timeout) fails the link

    def _on_connect(self, event: Input) -> None:
        if self.role is not Role.ANSWERER or self._started:
            raise UsageError("connect: only once, on an answerer")
        self._started = True
        self._attempt(event.now)

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
        if deferred is Deferred.ATTEMPT:
            self._attempt(event.now)
        elif deferred is Deferred.SCHEDULE:
            self._after_loss(event.now)

    def _on_rpc_result(self, event: RpcResult) -> None:
        purpose = self._calls.pop(event.call_id, None)
        if purpose is None:
            assert self._exchange is not None
            self._exchange.handle(event)
            return
        outcome = event.outcome
        if purpose is Call.PROBE:
            self._on_probed(event.now, outcome)
        elif (
            isinstance(outcome, RpcFailed)
            and purpose is Call.ANSWER
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
        elif purpose is Call.FETCH_OFFER:
            self._on_offer_fetched(event.now, outcome.result)
        else:
            if self.state in HANDSHAKE:
                self._arm_handshake(event.now)
            if self._exchange is not None and self._offer_id is not None:
                self._exchange.handle(EnableUploads(offer_id=self._offer_id))


Handler = Callable[["Connection", Any], None]
"""Takes the input (or, for a timer, ``now``)."""

Trigger = InputKind | Timer
"""What a row of the table answers: an input of that kind, or that timer falling due."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of `TRANSITIONS`."""

    handler: Handler
    moves: frozenset[Move]
    """The state changes the handler may make (as the row declares them)."""
    leads_to: frozenset[State]
    """Every state the connection may enter while the handler runs, from this row's
    state through ``moves`` (empty: it stays)."""


def _table() -> dict[tuple[State, Trigger], Transition]:
    c = Connection
    k = InputKind
    t = Timer
    rows: list[tuple[frozenset[State], Trigger, Handler, frozenset[Move]]] = [
        # Application commands.
        (frozenset({S.INITIALIZING}), k.CONNECT, c._on_connect, STAY),
        (LIVE, k.SEND, c._on_send, STAY),
        (LIVE, k.CLOSE, c._on_close, CLOSING),
        (LIVE, k.PAUSE_RECONNECT, c._on_pause, STAY),
        (LIVE, k.RESUME_RECONNECT, c._on_resume, LOSS | ATTEMPT),
        # Peer reports.
        (frozenset({S.GATHERING}), k.LOCAL_DESCRIPTION, c._on_local_description, DESCRIBED),
        (HANDSHAKE, k.REMOTE_DESCRIPTION_SET, c._on_remote_description_set, STAY),
        (PC_ALIVE, k.LOCAL_CANDIDATE, c._on_local_candidate, STAY),
        (PC_ALIVE, k.ICE_GATHERING_STATE, c._on_gathering_state, STAY),
        (PC_ALIVE, k.ICE_CONNECTION_STATE, c._on_ice_state, ICE_CHECKS | PROGRESS | LOSS),
        (PC_ALIVE, k.PEER_CONNECTION_STATE, c._on_pc_state, LOSS),
        (PC_ALIVE, k.CHANNEL_ANNOUNCED, c._on_channel_announced, STAY),
        (PC_ALIVE, k.CHANNEL_OPEN, c._on_channel_open, PROGRESS),
        (PC_ALIVE, k.CHANNEL_CLOSED, c._on_channel_closed, LOSS),
        # A frame can be the first sign of the open, or end the session.
        (PC_ALIVE - {S.GATHERING}, k.CHANNEL_MESSAGE, c._on_channel_message, PROGRESS | LOSS),
        (PC_ALIVE, k.CHANNEL_ERROR, c._on_channel_error, STAY),
        (PC_ALIVE, k.PEER_ERROR, c._on_peer_error, LOSS),
        (PC_ALIVE, k.REMOTE_CANDIDATE_REJECTED, c._on_candidate_rejected, STAY),
        # A fetched offer starts the handshake; a probe that found one starts an attempt.
        (LIVE, k.RPC_RESULT, c._on_rpc_result, FETCHED | ATTEMPT | LOSS),
        # Deadlines.  A timer is armed only where it means something; the other rows
        # exist so a late one is harmless (its handler checks the state it needs).
        (LIVE, t.CONNECTION, c._on_connection_timeout, LOSS),
        (LIVE, t.HANDSHAKE, c._on_handshake_timeout, LOSS),
        (LIVE, t.GATHERING, c._on_gathering_timeout, STAY),
        (LIVE, t.RECONNECT, c._on_reconnect_due, ATTEMPT),
        (LIVE, t.PROBE, c._on_probe_due, STAY),
        (LIVE, t.RESUME, c._on_resume_timeout, GIVE_UP),
        (LIVE, t.BUFFER, c._on_buffer_due, STAY),
        (LIVE, t.SUBMACHINES, c._on_submachines_due, LOSS),
    ]
    return {
        (state, trigger): Transition(handler, moves, _reachable(state, moves))
        for states, trigger, handler, moves in rows
        for state in states
    }


def _reachable(start: State, moves: frozenset[Move]) -> frozenset[State]:
    """Every state ``moves`` lead to from ``start``, one move after another."""
    reached: set[State] = set()
    frontier = [start]
    while frontier:
        here = frontier.pop()
        for a, b in moves:
            if a is here and b not in reached:
                reached.add(b)
                frontier.append(b)
    return frozenset(reached - {start})


TRANSITIONS: dict[tuple[State, Trigger], Transition] = _table()
"""Every accepted ``(state, trigger)`` and its row; an input with no row is an error."""

OFFERER_CALLS: dict[str, frozenset[Move]] = {
    "start_offer": FETCHED,
    "offer_published": DESCRIBED,
    "apply_answer": STAY,
    "resume_with": RESUMED | CLOSING,  # the fresh offer's own connection closes
}
"""The moves of the offer pool's calls into an offerer, the one way in outside the table."""

EDGES: frozenset[Move] = frozenset().union(
    *(row.moves for row in TRANSITIONS.values()), *OFFERER_CALLS.values()
)
"""Every state change a connection makes: derived from the rows (and the pool's calls)."""
