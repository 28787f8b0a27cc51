"""`Attempts`: what each role does to connect.

An answerer fetches an offer of its service (getService), negotiates the session layer
with it, builds a peer connection and answers; while it waits between attempts it
probes the service cheaply, so a publisher that came back is tried at once.  An
offerer is driven by its `OfferPool`: it creates the offer (`start_offer`), learns its
id (`offer_published`), applies the one answer (`apply_answer`), and takes over the peer
connection of a fresh offer when its session's peer answered that one (`resume_with`).
"""

from __future__ import annotations

from typing import Any

from rondevu_core.actions import CreateAnswer, CreateDataChannel, CreateOffer, SetRemoteDescription
from rondevu_core.connection.link import Link
from rondevu_core.connection.states import Call, Role, State, Timer
from rondevu_core.delivery.negotiation import read_session_attribute, remote_max_message_size
from rondevu_core.errors import ProtocolError, UsageError
from rondevu_core.events import (
    AnswerProcessed,
    Closed,
    Disconnected,
    OfferFetched,
    ProtocolViolation,
    ReconnectAttempting,
)
from rondevu_core.ice_exchange import EnableUploads, ReuploadCandidates, StartPolling
from rondevu_core.rpc import Method, RpcFailed, RpcRequest, Urgency
from rondevu_core.rules.replies import parse_fetched_offer


class Attempts(Link):
    """The answerer's attempts and the offerer's interface for the pool (module docstring)."""

    __slots__ = ()

    def _attempt(self, now: int) -> None:
        """Answerer: start an attempt (the first one, or a reconnection)."""
        self._teardown()
        self._deadlines.cancel(Timer.PROBE)
        if self._reconnect_attempt:
            self._emit(ReconnectAttempting, attempt=self._reconnect_attempt)
        self._set_state(State.INITIALIZING)
        self._offer_id = None
        self._deadlines.set(Timer.CONNECTION, now + self.config.connection_timeout_ms)
        self._call(
            Call.FETCH_OFFER,
            RpcRequest(
                method=Method.GET_SERVICE,
                params={"serviceFqn": str(self.service)},
                urgency=Urgency.URGENT,  # the first step of the handshake
            ),
        )

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

    def _probe(self) -> None:
        if self.state is not State.RECONNECTING or self._paused:
            return
        self._call(
            Call.PROBE,
            RpcRequest(method=Method.GET_SERVICE, params={"serviceFqn": str(self.service)}),
        )

    def _on_probed(self, now: int, outcome: Any) -> None:
        """A probe found the service: attempt now with its offer; else wait on."""
        if self.state is not State.RECONNECTING or self._paused:
            return
        if isinstance(outcome, RpcFailed):
            self._arm_probe(now)
            return
        self._deadlines.cancel(Timer.RECONNECT)
        self._teardown()  # a softly dropped link may still hold its peer connection
        self._emit(ReconnectAttempting, attempt=self._reconnect_attempt)
        self._set_state(State.INITIALIZING)
        self._offer_id = None
        self._deadlines.set(Timer.CONNECTION, now + self.config.connection_timeout_ms)
        self._on_offer_fetched(now, outcome.result)

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
        self._deadlines.set(Timer.CONNECTION, now + self.config.connection_timeout_ms)
        self._arm_handshake(now)
        self._exchange.handle(StartPolling(now=now, remote_sdp=sdp))
        return True

    def resume_with(self, fresh: Attempts, now: int) -> None:
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
        self._deadlines.cancel(Timer.RESUME)
        self._terminal = False
        self._pc, fresh._pc = fresh._pc, None
        self._exchange, fresh._exchange = fresh._exchange, None
        if self._exchange is not None:
            self._exchange.connection_id = self.connection_id
        self._offer_id, fresh._offer_id = fresh._offer_id, None
        self._local_sdp = fresh._local_sdp
        self._channel, fresh._channel = fresh._channel, None
        self._stale.update(fresh._stale)
        self._ice_ok = self._channel_open = False
        self.answer_applied = False
        self._set_state(State.SIGNALING, "Resuming the session")
        fresh._deadlines.clear()
        fresh._set_state(State.CLOSED, "Resumed an earlier session")
        fresh._emit(Closed, reason="Resumed an earlier session")
