"""`Answers`: polling for answers and handing each to its offer exactly once.

One poll at a time, plain at the interval or held by a server that holds calls, with
its own cursor; each answer goes to its offer's connection once, or to the connection
of the session it names (a peer that came back), and a connection that settles (up,
failed, closed) frees its slot so the pool refills.
"""

from __future__ import annotations

from typing import Any

from rondevu_core.connection import Connection, State
from rondevu_core.delivery.negotiation import read_session_attribute
from rondevu_core.errors import ProtocolError
from rondevu_core.events import AnswerDuplicate, ConnectionOpened, ProtocolViolation, SignalingError
from rondevu_core.inputs import Close
from rondevu_core.pool.publishing import Publishing
from rondevu_core.pool.states import PoolState, Timer
from rondevu_core.rpc import Method, RpcFailed, RpcOutcome, RpcRequest, Urgency
from rondevu_core.rules.replies import parse_poll_answers, poll_candidate_times
from rondevu_core.rules.server_info import LONG_POLL_MIN_MS
from rondevu_core.rules.signing import TIMESTAMP_TOLERANCE_MS


class Answers(Publishing):
    """Poll, apply answers, resume sessions, settle connections; see the module docstring."""

    __slots__ = ()

    def _poll(self, now: int) -> None:
        self._deadlines.set(Timer.POLL, now + self.config.poll_interval_ms)
        if self._poll_call is not None or self._publish_call is not None:
            return
        if not any(c.offer_id is not None for c in self._conns.values()):
            return  # nothing published: nothing can be answered
        wait = self._hold_ms(now)
        since = self._cursor
        params: dict[str, int] = {"since": since}
        urgency = Urgency.CAN_WAIT
        if wait:
            self._deadlines.cancel(Timer.POLL)  # its reply re-issues it
            since = self._newest if self._confirmed else self._cursor
            params = {"since": since, "waitMs": wait}
            urgency = Urgency.HELD
        self._poll_since, self._poll_sent_at, self._poll_wait = since, now, wait
        self._poll_call = self._call(RpcRequest(method=Method.POLL, params=params, urgency=urgency))

    def _hold_ms(self, now: int) -> int:
        """The ``waitMs`` of a poll sent now: 0 for a plain poll (see the module doc)."""
        wait = self.config.connection.long_poll_wait_ms
        if (
            not wait
            or self.state is not PoolState.FILLING
            or self._refresh_due
            or Timer.PUBLISH_RETRY in self._deadlines
            or any(c.offer_id is None for c in self.unanswered())
        ):
            return 0
        refresh = self._deadlines.at(Timer.REFRESH)
        if refresh is not None:
            wait = min(wait, refresh - now)  # the refresh must not wait for the reply
        return wait if wait >= LONG_POLL_MIN_MS else 0

    def _poll_again(self, now: int, *, at_once: bool) -> None:
        """Long polling: after a poll or publish settled, hold the next poll now if
        nothing keeps it from being held, else poll plainly at the interval."""
        if at_once and self._poll_call is None and self._hold_ms(now):
            self._poll(now)
        elif Timer.POLL not in self._deadlines and self.state is PoolState.FILLING:
            self._deadlines.set(Timer.POLL, now + self.config.poll_interval_ms)

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
