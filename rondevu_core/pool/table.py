"""`OfferPool` itself: its inputs, its timers and its transition table.

`POOL_TRANSITIONS` maps every accepted ``(PoolState, trigger)`` - an input's
`InputKind`, or one of the pool's timers falling due - to its handler; peer reports are
routed to a connection by ``pc_id``, RPC results by ``call_id`` and application
commands by ``connection_id``.  The pool's own state changes are few (`StartFilling`,
`StopFilling`, `Close`); its connections' are theirs (`rondevu_core.connection`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rondevu_core.errors import ProtocolError, UsageError
from rondevu_core.events import ProtocolViolation
from rondevu_core.inputs import COMMAND_KINDS, Close, Input, InputKind, PeerInput, RpcResult
from rondevu_core.outbox import earliest
from rondevu_core.pool.answers import Answers
from rondevu_core.pool.states import PoolState, Timer


class OfferPool(Answers):
    """Keeps ``max_offers`` unanswered offers of one service published; see `rondevu_core.pool`."""

    __slots__ = ()

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
        return earliest(self._deadlines.next(), *(c.get_timer() for c in self._conns.values()))

    def handle_timer(self, now: int) -> None:
        """Run every deadline due at ``now``."""
        if self.state is PoolState.CLOSED:
            return
        for timer in (*self._deadlines.pop_due(now), Timer.CONNECTIONS):
            if self._closed():
                return  # only `Close` closes a pool, but a handler must not outlive it
            POOL_TRANSITIONS[self.state, timer](self, now)  # both live states have rows

    def _closed(self) -> bool:
        # A method, not an inline test: handlers change ``state`` behind mypy's narrowing.
        return self.state is PoolState.CLOSED

    # -- timer handlers: each takes ``now`` --------------------------------------------

    def _on_poll_due(self, now: int) -> None:
        self._poll(now)

    def _on_refresh_due(self, now: int) -> None:
        self._refresh_due = True  # the offers' lifetime runs out: publish them again
        self._maybe_publish(now)

    def _on_check_due(self, now: int) -> None:
        self._check(now)

    def _on_publish_retry_due(self, now: int) -> None:
        self._maybe_publish(now)

    def _on_connections_due(self, now: int) -> None:
        for conn in list(self._conns.values()):
            at = conn.get_timer()
            if at is not None and at <= now:
                conn.handle_timer(now)
                self._settle(conn, now)

    def _on_start(self, event: Input) -> None:
        self.state = PoolState.FILLING
        self._deadlines.set(Timer.POLL, event.now + self.config.poll_interval_ms)
        self._set_look(event.now + self._look_interval())
        self._refill(event.now)

    def _on_stop(self, event: Input) -> None:
        self.state = PoolState.IDLE
        self._shutdown(event.now, "Stopped filling")

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


Handler = Callable[["OfferPool", Any], None]


def _table() -> dict[tuple[PoolState, InputKind | Timer], Handler]:
    p = OfferPool
    k = InputKind
    live = (PoolState.IDLE, PoolState.FILLING)
    table: dict[tuple[PoolState, InputKind | Timer], Handler] = {
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
        # Deadlines.  Stopping cancels the pool's own, so in IDLE only its connections'
        # fall due; the rows exist in both states so a late one is harmless.
        table[state, Timer.POLL] = p._on_poll_due
        table[state, Timer.REFRESH] = p._on_refresh_due
        table[state, Timer.CHECK] = p._on_check_due
        table[state, Timer.PUBLISH_RETRY] = p._on_publish_retry_due
        table[state, Timer.CONNECTIONS] = p._on_connections_due
    return table


POOL_TRANSITIONS: dict[tuple[PoolState, InputKind | Timer], Handler] = _table()
"""Every accepted ``(pool state, trigger)`` and its handler; an input with no row is an
error."""
