"""`Publishing`: one publication for the whole pool, refills, and noticing offers gone.

Every unanswered offer goes out in one publishService (server 0.5.4 replaces a service
with each call), never while a publish or a poll is in flight; a failure is retried
with backoff unless it is permanent.  Once per poll interval the pool looks its own
service up, and republishes at once when its offers are gone from the server.
"""

from __future__ import annotations

from rondevu_core.connection import Connection
from rondevu_core.errors import ProtocolError
from rondevu_core.events import (
    OfferCreated,
    OffersPublished,
    PermanentError,
    ProtocolViolation,
    PublishFailed,
    ServiceRepublished,
    SignalingError,
)
from rondevu_core.pool.base import PoolBase
from rondevu_core.pool.states import LOOK_INTERVAL_HELD_MS, PoolState, Timer
from rondevu_core.rpc import Method, RpcFailed, RpcOutcome, RpcRequest, Urgency
from rondevu_core.rules.error_kinds import classify, is_permanent
from rondevu_core.rules.replies import parse_published


class Publishing(PoolBase):
    """Refill, publish, retry, and the presence look-ups; see the module docstring."""

    __slots__ = ()

    def _refill(self, now: int) -> None:
        if self.state is not PoolState.FILLING:
            return
        for _ in range(self.config.max_offers - len(self.unanswered())):
            conn = Connection.offerer(
                self.config.service,
                config=self.config.connection,
                unit_random=self._random,
                outbox=self._outbox,
                session_epoch=self._session_epoch,
            )
            self._conns[conn.connection_id] = conn
            conn.start_offer(now)
            assert conn.pc_id is not None
            self._by_pc[conn.pc_id] = conn
        self._maybe_publish(now)

    def _maybe_publish(self, now: int) -> None:
        if (
            self.state is not PoolState.FILLING
            or self._publish_call is not None
            or Timer.PUBLISH_RETRY in self._deadlines
            or (self.pending_handshakes() and not self._keeps_answered)  # B8 on 0.5.4
        ):
            return
        offers = self.unanswered()
        if not offers or any(c.offer_sdp is None for c in offers):
            return  # wait until every offer is ready: one call for the whole pool
        if not self._refresh_due and all(c.offer_id is not None for c in offers):
            return
        if self._poll_call is not None:
            if not self._poll_wait:
                return  # a plain poll: its reply is near, and then this runs again
            self._cancel_poll()  # a held one could keep the publish waiting for a hold
        sdps = tuple(c.offer_sdp for c in offers if c.offer_sdp is not None)
        self._publish_sdps = sdps
        self._refresh_due = False
        # New offers are what the next peer's handshake starts from; a refresh can wait.
        new = any(c.offer_id is None for c in offers)
        self._publish_call = self._call(
            RpcRequest(
                method=Method.PUBLISH_SERVICE,
                params={
                    "serviceFqn": str(self.config.service),
                    "offers": [{"sdp": sdp} for sdp in sdps],
                    "ttl": self.config.ttl_ms,
                },
                urgency=Urgency.URGENT if new else Urgency.CAN_WAIT,
            )
        )

    def _on_published(self, outcome: RpcOutcome, now: int) -> None:
        self._publish_call = None
        if isinstance(outcome, RpcFailed) and is_permanent(outcome):
            self._outbox.emit(PublishFailed(connection_id=0, error=outcome.error))
            self._outbox.emit(
                PermanentError(
                    connection_id=0,
                    operation=Method.PUBLISH_SERVICE.value,
                    error=outcome.error,
                    kind=classify(outcome.error).value,
                )
            )
            self._shutdown(now, "Publishing failed for good")
            self.state = PoolState.IDLE
            return
        if isinstance(outcome, RpcFailed):
            self._publish_failed(outcome.error, now)
            return
        try:
            publication = parse_published(outcome.result)
        except ProtocolError as error:
            self._outbox.emit(ProtocolViolation(connection_id=0, error=error))
            self._publish_failed(str(error), now)
            return
        published = {sdp: offer_id for offer_id, sdp in publication.offers}
        self._keeps_answered = publication.keeps_answered_offers
        ids: list[str] = []
        omitted = False
        for conn in self.unanswered():
            sdp = conn.offer_sdp
            if sdp is None or sdp not in self._publish_sdps:
                continue
            offer_id = published.get(sdp)
            if offer_id is None:
                self._outbox.emit(
                    ProtocolViolation(
                        connection_id=0, error=ProtocolError("publishService omitted an offer")
                    )
                )
                omitted = True
                continue
            new = conn.offer_id is None
            conn.offer_published(offer_id, now)
            ids.append(offer_id)
            if new:
                self._outbox.emit(
                    OfferCreated(
                        connection_id=conn.connection_id,
                        offer_id=offer_id,
                        service_fqn=str(self.config.service),
                    )
                )
        self._outbox.emit(OffersPublished(connection_id=0, offer_ids=tuple(ids)))
        self._generation += 1
        self._presence.reset()
        if self._republish_reason is not None:
            reason, self._republish_reason = self._republish_reason, None
            self._outbox.emit(
                ServiceRepublished(connection_id=0, reason=reason, offer_ids=tuple(ids))
            )
        refresh_at = now + max(self.config.ttl_ms - self.config.refresh_margin_ms, 1000)
        self._deadlines.set(Timer.REFRESH, refresh_at)
        if omitted:
            # Retry after the backoff: republishing at once would loop as fast as the
            # server answers, and starve the poll that collects answers.
            self._publish_failed("publishService omitted an offer", now)
            return
        self._publish_backoff.reset()
        self._maybe_publish(now)  # offers created while this call was in flight
        if self.config.connection.long_poll_wait_ms:
            self._poll_again(now, at_once=True)

    def _publish_failed(self, error: str, now: int) -> None:
        self._outbox.emit(PublishFailed(connection_id=0, error=error))
        # The retry must publish even when every offer already has an id: the failed
        # call may have been the refresh, whose timer has fired and will not fire again.
        self._refresh_due = True
        delay = self._publish_backoff.next_delay(self._random())
        assert delay is not None  # unlimited attempts
        self._deadlines.set(Timer.PUBLISH_RETRY, now + delay)

    def _look_interval(self) -> int:
        """How often the pool looks its own service up: with every plain poll (one more
        call in the same batch), but only every `LOOK_INTERVAL_HELD_MS` while polls are
        held, which would otherwise cost a request a second the hold saves; a poll
        that fails and then succeeds again (the server restarted?) brings the next look
        forward at once."""
        if self.config.look_interval_ms is not None:
            return self.config.look_interval_ms
        if self.config.connection.long_poll_wait_ms:
            return max(self.config.poll_interval_ms, LOOK_INTERVAL_HELD_MS)
        return self.config.poll_interval_ms

    def _set_look(self, at: int) -> None:
        if self.config.look_interval_ms != 0:
            self._deadlines.set(Timer.CHECK, at)

    def _look_by(self, at: int) -> None:
        """Look no later than ``at`` (an earlier look stays as it is)."""
        due = self._deadlines.at(Timer.CHECK)
        if due is None or at < due:
            self._set_look(at)

    def _check(self, now: int) -> None:
        """Look our own service up, to notice offers gone from the server."""
        self._set_look(now + self._look_interval())
        if (
            self._check_call is not None
            or self._publish_call is not None
            or self._republish_reason is not None
            or not self._published_ids()
        ):
            return
        self._check_generation = self._generation
        self._check_call = self._call(
            RpcRequest(method=Method.GET_SERVICE, params={"serviceFqn": str(self.config.service)})
        )

    def _on_checked(self, outcome: RpcOutcome, now: int) -> None:
        self._check_call = None
        if isinstance(outcome, RpcFailed) and outcome.transport:
            # The server cannot be reached: say so (the poll fails silently), and look
            # again at the poll interval, whatever the look interval, until it answers.
            self._outbox.emit(
                SignalingError(
                    connection_id=0, operation=Method.GET_SERVICE.value, error=outcome.error
                )
            )
            self._set_look(now + self.config.poll_interval_ms)
        if self._publish_call is not None or self._check_generation != self._generation:
            return  # the look saw the offers of an earlier publication
        reason = self._presence.judge(outcome, self._published_ids())
        if self._presence.strikes:  # an ambiguous absence: the next look settles it soon
            self._set_look(now + self.config.poll_interval_ms)
        if reason is not None:
            self._republish_reason = reason
            self._refresh_due = True
            self._maybe_publish(now)
