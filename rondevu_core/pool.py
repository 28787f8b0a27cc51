"""The offer pool: the offerer side of ``publishService`` + ``startFilling`` (as client 0.18.9).

An `OfferPool` owns one offerer `Connection` per offer and one `Outbox` shared with them,
so a driver runs the whole pool as one machine: `handle`, `get_timer` / `handle_timer`,
`next_action` / `next_event`.  Peer reports are routed by ``pc_id``, RPC results by
``call_id``, application commands by ``connection_id``.

Rules (each fixes a bug of the original; docs/compatibility.md):

- **Full pool.**  Only *unanswered* offers count toward ``max_offers`` (B11); creating
  an offer reserves its slot at once, so concurrent refills cannot overshoot or
  undershoot (B7).  The pool never holds more than ``max_offers`` unanswered offers.
- **One publication for the whole pool.**  Server 0.5.4 replaces a service with every
  publishService (§7.2), deleting the previous offers and their candidates.  So the pool
  publishes all its unanswered offers in one call and republishes them (to add new
  offers or to refresh them before ``ttl_ms`` runs out), never while a publish or a poll
  is in flight.  A republish deletes the server's copy of the unanswered offers'
  candidates, so each retained offer re-uploads its trickled ones.
- **No republish can delete a handshake in progress (B8).**  Against 0.5.4 the pool
  republishes only while no handshake is pending, so while k handshakes are pending it
  holds ``max_offers - k`` published offers and refills once they settle (a handshake
  that succeeds is noticed by the next poll's refill, a failed one at once).  Our
  server replaces only the *unanswered* offers and keeps the answered ones with their
  candidates; it says so with ``keepsAnsweredOffers: true`` in the publishService
  result.  The pool remembers that flag from the latest successful publish and, while
  it is set, republishes whatever handshakes are pending: the pool then holds
  ``max_offers`` unanswered offers at all times but during the publish round trip
  (B7, B11).  Before the first publish returns the flag is unknown, hence off.
- **Answers exactly once.**  One ``poll`` at a time (B6), every ``poll_interval_ms``.  Its
  answers cursor is its own (B20) and lags one millisecond behind the newest
  ``answeredAt`` seen, so two answers stored in the same millisecond are both seen;
  each offer takes one answer (a latch in `Connection.apply_answer`), and a different
  answer for an answered offer is reported as ``answer:duplicate``.  Remote candidates
  come from each connection's own getIceCandidates stream, not from ``poll``.
- **Long polling** (``connection.long_poll_wait_ms`` set: the server holds calls,
  docs/long-polling.md).  The poll carries ``waitMs`` and goes alone
  (``Urgency.HELD``); the server answers it when an answer or candidate arrives, and
  the next one leaves as soon as its reply is in, so an idle pool makes one request per
  hold.  A held poll is never sent while a publication is due (an offer without an id,
  a refresh, a retry): it would keep the publish waiting, so the pool polls plainly at
  its interval until the publish is done, then holds again at once; and a hold never
  outlasts the next refresh.  The 1 ms lag of the cursor would make every held poll
  return at once, so a held poll uses the exact newest timestamp seen (answers and
  candidates: the server counts both as news) once a lagged read has confirmed nothing
  else shares that millisecond: news costs one immediate lagged read, then the pool
  holds again.  A reply that came back early with nothing new (a server at a bound,
  shutting down, a row we ignore) sends the pool back to its plain interval once, so
  it never spins.  A publication that becomes due while a poll is held (a failed
  connection's replacement, say) cancels that poll (`CancelRpc`) rather than wait for
  it: a poll only reads, so the next one, with the same cursor, loses nothing.
- **Failed connections are closed, then replaced** (B14): a connection that fails
  closes its peer connection, the pool closes the connection and creates a new offer.
- **Sessions resume.**  With the session layer on, every offer names this pool's epoch
  (drawn once, on first use) and an answer names its session.  An answer naming the
  session of a connection the pool still holds (waiting for its peer, or not yet aware
  that the link died) is handed to *that* connection (`Connection.resume_with`): the
  application keeps one connection object and the session retransmits what it had not
  delivered.  The answered offer's own connection closes without ever being announced.
- **Offers gone behind its back are published again** (`rondevu_core.rules.republish`): once
  per poll interval (every `LOOK_INTERVAL_HELD_MS` while polls are held, and at once
  when a poll succeeds after failing) the pool looks its own service up; when its
  offers are gone (server restart, expiry, another process with the same identity) it
  republishes at once and says so with ``service:republished``; a look that gets no
  answer is reported as ``signaling:error`` (pool-wide: ``connection_id`` 0).
- **A permanent publish failure stops the pool** (`rondevu_core.rules.error_kinds`): a name
  held by another key or a malformed call fails the same way every time, so the pool
  reports ``error:permanent`` and goes back to IDLE instead of retrying for ever.

After `Close` (pool-wide) every connection is closed and the pool never acts again.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from rondevu_core.actions import Action, CancelRpc, SendRpc
from rondevu_core.config import PoolConfig
from rondevu_core.connection import Connection, State
from rondevu_core.delivery.negotiation import read_session_attribute
from rondevu_core.errors import ProtocolError, UsageError
from rondevu_core.events import (
    AnswerDuplicate,
    ConnectionOpened,
    Event,
    OfferCreated,
    OffersPublished,
    PermanentError,
    ProtocolViolation,
    PublishFailed,
    ServiceRepublished,
    SignalingError,
)
from rondevu_core.inputs import (
    COMMAND_KINDS,
    Close,
    Input,
    InputKind,
    PeerInput,
    RpcResult,
)
from rondevu_core.outbox import Deadlines, Outbox
from rondevu_core.rpc import Method, RpcFailed, RpcOutcome, RpcRequest, Urgency
from rondevu_core.rules.backoff import Backoff, BackoffPolicy
from rondevu_core.rules.error_kinds import classify, is_permanent
from rondevu_core.rules.replies import parse_poll_answers, parse_published, poll_candidate_times
from rondevu_core.rules.republish import PresenceRule
from rondevu_core.rules.server_info import LONG_POLL_MIN_MS
from rondevu_core.rules.signing import TIMESTAMP_TOLERANCE_MS

__all__ = ["LOOK_INTERVAL_HELD_MS", "POOL_TRANSITIONS", "OfferPool", "PoolState"]

_RESUMING = frozenset({State.SIGNALING, State.CHECKING, State.CONNECTING})
"""States of an announced connection that is again in a handshake (`resume_with`)."""


class PoolState(Enum):
    """IDLE (not filling), FILLING (publishing and polling), CLOSED (for good)."""

    IDLE = "idle"
    FILLING = "filling"
    CLOSED = "closed"


class _Timer(Enum):
    POLL = "poll"
    REFRESH = "refresh"
    PUBLISH_RETRY = "publish_retry"
    CHECK = "check"


LOOK_INTERVAL_HELD_MS = 60_000
"""How often a pool whose polls are held looks its own service up (`OfferPool`)."""

_PUBLISH_RETRY = BackoffPolicy(base_ms=1000, max_ms=30000, jitter=0.1, max_attempts=0)

Handler = Callable[["OfferPool", Any], None]


class OfferPool:
    """Keeps ``max_offers`` unanswered offers of one service published; see the module doc."""

    __slots__ = (
        "_answered_at",
        "_by_pc",
        "_check_call",
        "_check_generation",
        "_confirmed",
        "_conns",
        "_cursor",
        "_deadlines",
        "_duplicates",
        "_epoch",
        "_generation",
        "_keeps_answered",
        "_newest",
        "_opened",
        "_outbox",
        "_poll_call",
        "_poll_sent_at",
        "_poll_since",
        "_poll_wait",
        "_presence",
        "_publish_backoff",
        "_publish_call",
        "_publish_sdps",
        "_random",
        "_refresh_due",
        "_republish_reason",
        "_server_trouble",
        "_stale",
        "config",
        "state",
    )

    def __init__(
        self,
        config: PoolConfig,
        *,
        unit_random: Callable[[], float],
        outbox: Outbox | None = None,
    ) -> None:
        self.config = config
        self._random = unit_random
        self._outbox = outbox if outbox is not None else Outbox()
        self.state = PoolState.IDLE
        self._deadlines: Deadlines[_Timer] = Deadlines()
        self._conns: dict[int, Connection] = {}
        self._by_pc: dict[int, Connection] = {}
        self._opened: set[int] = set()
        self._answered_at: dict[str, int] = {}
        # Different answers already reported per offer: the 1 ms cursor lag re-delivers
        # the newest answer on every poll, and one report of each is enough.
        self._duplicates: dict[str, set[int]] = {}
        self._cursor = 0
        # Long polling: the newest plausible answer or candidate time seen, and whether
        # a lagged read since it brought nothing newer (then a held poll may use it).
        self._newest = 0
        self._confirmed = False
        self._poll_call: int | None = None
        self._poll_sent_at = 0
        self._poll_since = 0
        self._poll_wait = 0
        self._publish_call: int | None = None
        self._publish_sdps: tuple[str, ...] = ()
        self._publish_backoff = Backoff(_PUBLISH_RETRY)
        self._refresh_due = False
        self._stale: set[int] = set()
        self._keeps_answered = False
        self._presence = PresenceRule()
        self._check_call: int | None = None
        # Successful publications so far: a look sent before the latest one describes
        # offers that are no longer ours, and is ignored.
        self._generation = 0
        self._check_generation = 0
        self._republish_reason: str | None = None
        self._server_trouble = False  # a poll got no answer since the last one that did
        self._epoch: str | None = None

    # -- driver interface ------------------------------------------------------------

    def handle(self, input: Input) -> None:
        """Consume one input; what it causes waits in the output queues."""
        kind = input.kind
        if self.state is PoolState.CLOSED:
            if kind in COMMAND_KINDS and kind is not InputKind.CLOSE:
                raise UsageError(f"{kind.value}: the offer pool is closed")
            return
        handler = POOL_TRANSITIONS.get((self.state, kind))
        if handler is None:
            if kind in COMMAND_KINDS:
                raise UsageError(f"{kind.value} is not allowed in pool state {self.state.value}")
            self._outbox.emit(
                ProtocolViolation(
                    connection_id=0,
                    error=ProtocolError(f"{kind.value} unexpected in pool state {self.state}"),
                )
            )
            return
        handler(self, input)

    def get_timer(self) -> int | None:
        """The earliest deadline of the pool and its connections (monotonic ms), or None."""
        best = self._deadlines.next()
        for conn in self._conns.values():
            at = conn.get_timer()
            if at is not None and (best is None or at < best):
                best = at
        return best

    def handle_timer(self, now: int) -> None:
        """Run every deadline due at ``now``."""
        if self.state is PoolState.CLOSED:
            return
        for timer in self._deadlines.pop_due(now):
            if timer is _Timer.POLL:
                self._poll(now)
            elif timer is _Timer.REFRESH:
                self._refresh_due = True
                self._maybe_publish(now)
            elif timer is _Timer.CHECK:
                self._check(now)
            else:
                self._maybe_publish(now)
        for conn in list(self._conns.values()):
            at = conn.get_timer()
            if at is not None and at <= now:
                conn.handle_timer(now)
                self._settle(conn, now)

    def next_action(self) -> Action | None:
        """The oldest queued action, or None."""
        return self._outbox.next_action()

    def next_event(self) -> Event | None:
        """The oldest queued event, or None."""
        return self._outbox.next_event()

    @property
    def outbox(self) -> Outbox:
        """Where the pool and its connections queue their output."""
        return self._outbox

    @property
    def connections(self) -> dict[int, Connection]:
        """The live connections by ``connection_id`` (read-only use)."""
        return self._conns

    def unanswered(self) -> list[Connection]:
        """Connections whose offer has no answer yet (being created, ready or published)."""
        return [c for c in self._conns.values() if not c.answer_applied and not c.terminal]

    @property
    def server_keeps_answered_offers(self) -> bool:
        """The ``keepsAnsweredOffers`` of the latest successful publish (False before)."""
        return self._keeps_answered

    def pending_handshakes(self) -> int:
        """Answered offers whose connection is neither up nor finished (a resumed
        session's handshake counts too: a republish on 0.5.4 would delete its offer)."""
        return sum(
            1
            for c in self._conns.values()
            if c.answer_applied
            and not c.terminal
            and (c.connection_id not in self._opened or c.state in _RESUMING)
        )

    # -- internals -------------------------------------------------------------------

    def _call(self, request: RpcRequest) -> int:
        call_id = self._outbox.new_id()
        self._outbox.act(SendRpc(call_id=call_id, request=request))
        return call_id

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

    def _session_epoch(self) -> str:
        """This pool's epoch: drawn on first use, so a pool that never offers the session
        layer consumes no randomness for it."""
        if self._epoch is None:
            self._epoch = "".join(f"{int(self._random() * 2**52):013x}" for _ in range(2))
        return self._epoch

    def _resumed(self, conn: Connection, sdp: str, answerer: str, now: int) -> Connection:
        """The connection that takes ``sdp``, the answer to ``conn``'s offer: an older
        one whose session the answer names, or ``conn`` itself.  Only the user who
        answered for that session may resume it: a session id seen by someone else
        (the server stores answers) does not let them take over its messages."""
        remote = read_session_attribute(sdp) if self._epoch is not None else None
        if remote is None:
            return conn
        old = next(
            (
                c
                for c in self._conns.values()
                if c is not conn
                and c.session_token == remote.token
                and c.answerer_id == answerer
                and c.state is not State.CLOSED
            ),
            None,
        )
        if old is None:
            return conn
        pc = conn.pc_id
        if old.offer_id is not None:
            self._answered_at.pop(old.offer_id, None)
            self._duplicates.pop(old.offer_id, None)
        old.resume_with(conn, now)
        self._forget(conn)
        self._by_pc = {p: c for p, c in self._by_pc.items() if c is not old}
        if pc is not None:
            self._by_pc[pc] = old
        return old

    def _maybe_publish(self, now: int) -> None:
        if (
            self.state is not PoolState.FILLING
            or self._publish_call is not None
            or _Timer.PUBLISH_RETRY in self._deadlines
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
        self._deadlines.set(_Timer.REFRESH, refresh_at)
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
        self._deadlines.set(_Timer.PUBLISH_RETRY, now + delay)

    def _poll(self, now: int) -> None:
        self._deadlines.set(_Timer.POLL, now + self.config.poll_interval_ms)
        if self._poll_call is not None or self._publish_call is not None:
            return
        if not any(c.offer_id is not None for c in self._conns.values()):
            return  # nothing published: nothing can be answered
        wait = self._hold_ms(now)
        since = self._cursor
        params: dict[str, int] = {"since": since}
        urgency = Urgency.CAN_WAIT
        if wait:
            self._deadlines.cancel(_Timer.POLL)  # its reply re-issues it
            since = self._newest if self._confirmed else self._cursor
            params = {"since": since, "waitMs": wait}
            urgency = Urgency.HELD
        self._poll_since, self._poll_sent_at, self._poll_wait = since, now, wait
        self._poll_call = self._call(RpcRequest(method=Method.POLL, params=params, urgency=urgency))

    def _cancel_poll(self) -> None:
        """Abandon the held poll: it only reads, so the next poll (same cursor) sees
        whatever its reply would have carried."""
        assert self._poll_call is not None
        self._outbox.act(CancelRpc(call_id=self._poll_call))
        self._poll_call = None

    def _hold_ms(self, now: int) -> int:
        """The ``waitMs`` of a poll sent now: 0 for a plain poll (see the module doc)."""
        wait = self.config.connection.long_poll_wait_ms
        if (
            not wait
            or self.state is not PoolState.FILLING
            or self._refresh_due
            or _Timer.PUBLISH_RETRY in self._deadlines
            or any(c.offer_id is None for c in self.unanswered())
        ):
            return 0
        refresh = self._deadlines.at(_Timer.REFRESH)
        if refresh is not None:
            wait = min(wait, refresh - now)  # the refresh must not wait for the reply
        return wait if wait >= LONG_POLL_MIN_MS else 0

    def _poll_again(self, now: int, *, at_once: bool) -> None:
        """Long polling: after a poll or publish settled, hold the next poll now if
        nothing keeps it from being held, else poll plainly at the interval."""
        if at_once and self._poll_call is None and self._hold_ms(now):
            self._poll(now)
        elif _Timer.POLL not in self._deadlines and self.state is PoolState.FILLING:
            self._deadlines.set(_Timer.POLL, now + self.config.poll_interval_ms)

    def _note_poll_times(
        self, outcome: RpcOutcome, answers: list[Any], now: int, unix_ms: int
    ) -> bool:
        """Long polling: move the exact cursor; True when the reply warrants the next
        poll at once (news, a confirming lagged read, or a hold that ran its course)."""
        if isinstance(outcome, RpcFailed):
            return False
        limit = unix_ms + TIMESTAMP_TOLERANCE_MS
        times = [a.answered_at for a in answers] + poll_candidate_times(outcome.result)
        plausible = [t for t in times if t <= limit]  # a far-future row is not trusted
        top = max(plausible, default=None)
        if top is not None and top > self._newest:
            self._newest = top
            self._confirmed = False
            return True
        if self._poll_since < self._newest:
            self._confirmed = True  # the lagged read brought nothing newer: settled
            return True
        return self._poll_wait > 0 and self._poll_sent_at + self._poll_wait // 2 <= now

    def _published_ids(self) -> frozenset[str]:
        return frozenset(c.offer_id for c in self.unanswered() if c.offer_id is not None)

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
            self._deadlines.set(_Timer.CHECK, at)

    def _look_by(self, at: int) -> None:
        """Look no later than ``at`` (an earlier look stays as it is)."""
        due = self._deadlines.at(_Timer.CHECK)
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

    def _held_poll_ended_early(self, result: object, now: int) -> bool:
        """A held poll came back before half its hold with nothing in it."""
        if not self._poll_wait or now >= self._poll_sent_at + self._poll_wait // 2:
            return False
        try:
            return not parse_poll_answers(result) and not poll_candidate_times(result)
        except ProtocolError:
            return False

    def _on_polled(self, outcome: RpcOutcome, now: int, unix_ms: int) -> None:
        self._poll_call = None
        answers: list[Any] = []
        if isinstance(outcome, RpcFailed):
            if outcome.transport:
                # The server may be restarting: look at the poll interval until a look
                # gets an answer (a held poll that succeeds may take a whole hold).
                self._look_by(now + self.config.poll_interval_ms)
            if outcome.transport and not self._server_trouble:
                self._server_trouble = True  # reported once per outage, like a look's
                self._outbox.emit(
                    SignalingError(
                        connection_id=0, operation=Method.POLL.value, error=outcome.error
                    )
                )
            self._maybe_publish(now)
        else:
            if self._server_trouble:  # back after an outage: did it forget our offers?
                self._server_trouble = False
                self._look_by(now)
            elif self._held_poll_ended_early(outcome.result, now):
                # What a server says as it shuts down; it may be back, with nothing of
                # ours, by the next poll: that poll's success brings the look forward.
                self._server_trouble = True
                self._look_by(now + self.config.poll_interval_ms)
            try:
                answers = parse_poll_answers(outcome.result)
            except ProtocolError as error:
                self._outbox.emit(ProtocolViolation(connection_id=0, error=error))
                self._maybe_publish(now)
                outcome = RpcFailed(error=str(error))
            else:
                self._apply_answers(answers, now, unix_ms)
        if self.config.connection.long_poll_wait_ms:
            at_once = self._note_poll_times(outcome, answers, now, unix_ms)
            self._poll_again(now, at_once=at_once)

    def _apply_answers(self, answers: list[Any], now: int, unix_ms: int) -> None:
        by_offer = {c.offer_id: c for c in self._conns.values() if c.offer_id is not None}
        for answer in sorted(answers, key=lambda a: a.answered_at):
            conn = by_offer.get(answer.offer_id)
            if conn is None:
                continue  # an offer of a past publication or connection
            if answer.answered_at <= unix_ms + TIMESTAMP_TOLERANCE_MS:
                # Lag one ms behind the newest answer so a same-millisecond one is not
                # lost.  Only answers to our offers at plausible times move the cursor:
                # one bogus far-future row would otherwise hide every later answer.
                self._cursor = max(self._cursor, answer.answered_at - 1)
            seen = self._answered_at.get(answer.offer_id)
            if seen is not None:
                reported = self._duplicates.setdefault(answer.offer_id, set())
                if seen != answer.answered_at and answer.answered_at not in reported:
                    reported.add(answer.answered_at)
                    self._outbox.emit(
                        AnswerDuplicate(connection_id=conn.connection_id, offer_id=answer.offer_id)
                    )
                continue
            if not conn.answer_applied and conn.state is State.SIGNALING:
                conn = self._resumed(conn, answer.sdp, answer.answerer_id, now)
            if conn.apply_answer(answer.sdp, answer.answerer_id, now):
                self._answered_at[answer.offer_id] = answer.answered_at
                self._settle(conn, now)
        self._refill(now)

    def _settle(self, conn: Connection, now: int) -> None:
        """After ``conn`` handled something: announce it, or close and replace it."""
        cid = conn.connection_id
        if conn.state is State.CONNECTED and cid not in self._opened and conn.offer_id:
            self._opened.add(cid)
            self._outbox.emit(ConnectionOpened(connection_id=cid, offer_id=conn.offer_id))
        if not conn.terminal:
            return
        if conn.state is not State.CLOSED:
            conn.handle(Close(now=now, reason="Replaced by a new offer"))  # B14
        self._forget(conn)
        self._refill(now)
        self._maybe_publish(now)

    def _forget(self, conn: Connection) -> None:
        self._stale.update(conn.outstanding_calls())
        self._conns.pop(conn.connection_id, None)
        self._by_pc = {pc: c for pc, c in self._by_pc.items() if c is not conn}
        self._opened.discard(conn.connection_id)
        if conn.offer_id is not None:
            self._answered_at.pop(conn.offer_id, None)
            self._duplicates.pop(conn.offer_id, None)

    def _target(self, event: Any) -> Connection:
        cid = event.connection_id
        conn = self._conns.get(cid) if cid is not None else None
        if conn is None:
            raise UsageError(f"{event.kind.value}: no connection {cid} in this pool")
        return conn

    # -- handlers --------------------------------------------------------------------

    def _on_start(self, event: Input) -> None:
        self.state = PoolState.FILLING
        self._deadlines.set(_Timer.POLL, event.now + self.config.poll_interval_ms)
        self._set_look(event.now + self._look_interval())
        self._refill(event.now)

    def _on_stop(self, event: Input) -> None:
        self.state = PoolState.IDLE
        self._shutdown(event.now, "Stopped filling")

    def _shutdown(self, now: int, reason: str) -> None:
        self._deadlines.clear()
        for conn in list(self._conns.values()):
            if conn.state is not State.CLOSED:
                conn.handle(Close(now=now, reason=reason))
            self._forget(conn)
        if self._poll_call is not None and self._poll_wait:
            self._cancel_poll()
        for call in (self._poll_call, self._publish_call, self._check_call):
            if call is not None:
                self._stale.add(call)
        self._poll_call = self._publish_call = self._check_call = None
        self._refresh_due = False
        self._republish_reason = None
        self._presence.reset()
        self._answered_at.clear()
        # Take the offers out of discovery; the reply is not needed.
        self._stale.add(
            self._call(
                RpcRequest(
                    method=Method.DELETE_SERVICE, params={"serviceFqn": str(self.config.service)}
                )
            )
        )

    def _on_close(self, event: Close) -> None:
        if event.connection_id is not None:
            conn = self._target(event)
            conn.handle(event)
            self._settle(conn, event.now)
            return
        if self.state is PoolState.FILLING:
            self._shutdown(event.now, event.reason)
        else:
            for conn in list(self._conns.values()):
                conn.handle(Close(now=event.now, reason=event.reason))
                self._forget(conn)
        self._deadlines.clear()
        self.state = PoolState.CLOSED

    def _on_command(self, event: Any) -> None:
        conn = self._target(event)
        conn.handle(event)
        self._settle(conn, event.now)

    def _on_peer(self, event: PeerInput) -> None:
        conn = self._by_pc.get(event.pc_id)
        if conn is None:
            return  # a peer connection of a connection already gone: stale
        conn.handle(event)
        if conn.offer_id is None and conn.offer_sdp is not None:
            self._maybe_publish(event.now)
        self._settle(conn, event.now)

    def _on_rpc(self, event: RpcResult) -> None:
        call_id = event.call_id
        if call_id == self._publish_call:
            self._on_published(event.outcome, event.now)
        elif call_id == self._poll_call:
            self._on_polled(event.outcome, event.now, event.unix_ms)
        elif call_id == self._check_call:
            self._on_checked(event.outcome, event.now)
        elif call_id in self._stale:
            self._stale.discard(call_id)
        else:
            for conn in self._conns.values():
                if conn.owns_call(call_id):
                    conn.handle(event)
                    self._settle(conn, event.now)
                    return
            raise UsageError(f"unknown call id {call_id}")


def _table() -> dict[tuple[PoolState, InputKind], Handler]:
    p = OfferPool
    k = InputKind
    live = (PoolState.IDLE, PoolState.FILLING)
    table: dict[tuple[PoolState, InputKind], Handler] = {
        (PoolState.IDLE, k.START_FILLING): p._on_start,
        (PoolState.FILLING, k.STOP_FILLING): p._on_stop,
    }
    for state in live:
        table[state, k.CLOSE] = p._on_close
        table[state, k.RPC_RESULT] = p._on_rpc
        for kind in (k.SEND, k.PAUSE_RECONNECT, k.RESUME_RECONNECT):
            table[state, kind] = p._on_command
        for kind in InputKind:
            if kind not in COMMAND_KINDS and kind is not k.RPC_RESULT:
                table[state, kind] = p._on_peer
    return table


POOL_TRANSITIONS: dict[tuple[PoolState, InputKind], Handler] = _table()
"""Every accepted ``(pool state, input kind)`` and its handler; anything else is an error."""
