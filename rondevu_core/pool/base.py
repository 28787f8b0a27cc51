"""`PoolBase`: the fields of an offer pool, its queries and the helpers every layer uses.

The pool is one class in layers, one module each, every layer using only those below
it: `base` (fields, queries, call and shutdown helpers), `publishing` (one publication
for the whole pool, refills, the presence look-ups that notice offers gone), `answers`
(polling for answers, applying each exactly once, resuming sessions, settling
connections) and `table` (`OfferPool`: inputs, timers, `POOL_TRANSITIONS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rondevu_core.actions import CancelRpc, SendRpc
from rondevu_core.config import PoolConfig
from rondevu_core.connection import Connection, State
from rondevu_core.errors import UsageError
from rondevu_core.inputs import Close
from rondevu_core.outbox import Deadlines, DrainsOutbox, Outbox
from rondevu_core.pool.states import PUBLISH_RETRY, RESUMING, PoolState, Timer
from rondevu_core.rpc import Method, RpcRequest
from rondevu_core.rules.backoff import Backoff
from rondevu_core.rules.republish import PresenceRule


class PoolBase(DrainsOutbox):
    """What every layer of `OfferPool` builds on; see the module docstring."""

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
        self._deadlines: Deadlines[Timer] = Deadlines()
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
        self._publish_backoff = Backoff(PUBLISH_RETRY)
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
            and (c.connection_id not in self._opened or c.state in RESUMING)
        )

    def _call(self, request: RpcRequest) -> int:
        call_id = self._outbox.new_id()
        self._outbox.act(SendRpc(call_id=call_id, request=request))
        return call_id

    def _session_epoch(self) -> str:
        """This pool's epoch: drawn on first use, so a pool that never offers the session
        layer consumes no randomness for it."""
        if self._epoch is None:
            self._epoch = "".join(f"{int(self._random() * 2**52):013x}" for _ in range(2))
        return self._epoch

    def _published_ids(self) -> frozenset[str]:
        return frozenset(c.offer_id for c in self.unanswered() if c.offer_id is not None)

    def _cancel_poll(self) -> None:
        """Abandon the held poll: it only reads, so the next poll (same cursor) sees
        whatever its reply would have carried."""
        assert self._poll_call is not None
        self._outbox.act(CancelRpc(call_id=self._poll_call))
        self._poll_call = None

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

    def _poll_again(self, now: int, *, at_once: bool) -> None:
        """Schedule the next poll (`Answers._poll_again`); declared here because a
        publication that lands lets polling resume."""
        raise NotImplementedError
