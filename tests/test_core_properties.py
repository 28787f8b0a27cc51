"""Property tests of the connection and pool machines (hypothesis), and totality.

- Totality: every (state, input kind) pair, from machines captured in each state during a
  harness run, either follows the table, raises `UsageError` (commands only), or emits a
  ``protocol:error``; nothing else escapes, and CLOSED never acts.
- Stateful suites drive one machine with arbitrary inputs, RPC outcomes and time, and
  check the invariants after every step: state changes stay on `EDGES`; no action and no
  timer after CLOSED; the buffer stays bounded; backoff delays stay within bounds;
  messages replay in order and at most once per connection; the pool never holds more
  than ``max_offers`` unanswered offers and applies each answer at most once.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from rondevu_core.actions import SendRpc
from rondevu_core.config import ConnectionConfig, PoolConfig
from rondevu_core.connection import EDGES, Connection, State
from rondevu_core.errors import UsageError
from rondevu_core.events import (
    AnswerProcessed,
    MessageReplayed,
    ReconnectScheduled,
    StateChanged,
)
from rondevu_core.inputs import (
    COMMAND_KINDS,
    Close,
    Connect,
    IceConnectionStateChanged,
    InputKind,
    LocalCandidate,
    LocalDescriptionReady,
    PauseReconnect,
    RpcResult,
    SendMessage,
    StartFilling,
)
from rondevu_core.pool import OfferPool
from rondevu_core.rpc import Method, RpcOk
from tests.core_inputs import SDP, arbitrary_input, connection_pc
from tests.fakes.network import Sim
from tests.test_core_harness import answerer_rpc_budget, fqn

SERVICE = fqn("chat:1.0.0@alice")


def captured_states() -> dict[State, Connection]:
    """One answerer connection per state, copied while a harness run passes through it."""
    sim = Sim()
    pool = OfferPool(PoolConfig(service=SERVICE), unit_random=random.Random(1).random)
    alice = sim.add("alice", "alice", pool)
    conn = Connection.answerer(
        SERVICE, config=ConnectionConfig(max_reconnect_attempts=1), unit_random=lambda: 0.5
    )
    bob = sim.add("bob", "bob", conn)
    seen: dict[State, Connection] = {State.INITIALIZING: copy.deepcopy(conn)}
    alice.feed(alice_start(sim.now))
    bob.feed(Connect(now=sim.now))
    severed = False
    while sim.step() and sim.now < 1_765_700_000_000 + 300_000:
        seen.setdefault(conn.state, copy.deepcopy(conn))
        if conn.state is State.CONNECTED and not severed:
            severed = True
            paused = copy.deepcopy(conn)  # paused: a drop parks in DISCONNECTED
            paused.handle(PauseReconnect(now=sim.now))
            paused.handle(
                IceConnectionStateChanged(now=sim.now, pc_id=conn.pc_id or 0, state="disconnected")
            )
            seen[State.DISCONNECTED] = paused
            sim.network.sever(sim.network.live_pc(bob), browser=True)
        if conn.state is State.RECONNECTING and State.CLOSED not in seen:
            closed = copy.deepcopy(conn)
            closed.handle(Close(now=sim.now))
            seen[State.CLOSED] = closed
    failing = Connection.answerer(
        fqn("chat:9.9.9@alice"),
        config=ConnectionConfig(reconnect_enabled=False),
        unit_random=lambda: 0.5,
    )
    sim.add("carol", "carol", failing).feed(Connect(now=sim.now))
    sim.run_until(lambda: failing.terminal, limit_ms=60_000)
    seen[State.FAILED] = failing
    return seen


def alice_start(now: int) -> StartFilling:
    return StartFilling(now=now)


CAPTURED = captured_states()


@pytest.mark.parametrize("kind", list(InputKind), ids=lambda k: k.value)
@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_every_state_input_pair_is_handled(state: State, kind: InputKind) -> None:
    if state not in CAPTURED:
        pytest.skip(f"{state.value} not reached by the capture run")
    conn = copy.deepcopy(CAPTURED[state])
    while conn.next_action() is not None:
        pass
    while conn.next_event() is not None:
        pass
    calls = sorted(conn.outstanding_calls())
    rng = random.Random(0)
    event = arbitrary_input(kind, 1_765_800_000_000, connection_pc(conn), calls, rng.choice)
    if event is None:
        return
    try:
        conn.handle(event)
    except UsageError:
        assert kind in COMMAND_KINDS or kind is InputKind.RPC_RESULT
        return
    if state is State.CLOSED:
        assert conn.next_action() is None
        assert conn.get_timer() is None


HEALTHY: dict[Method, Any] = {
    Method.GET_SERVICE: {"offerId": "ab" * 32, "sdp": SDP, "username": "alice"},
    Method.ANSWER_OFFER: {"success": True, "offerId": "ab" * 32},
    Method.GET_ICE_CANDIDATES: {"candidates": [], "offerId": "ab" * 32},
    Method.ADD_ICE_CANDIDATES: {"count": 1, "offerId": "ab" * 32},
}


class ConnectionMachine(RuleBasedStateMachine):
    """An answerer fed arbitrary inputs, outcomes and time."""

    def __init__(self) -> None:
        super().__init__()
        # A short polling timeout makes the RPC budget (5 polls) reachable within a run.
        self.config = ConnectionConfig(
            max_buffer_size=3, max_reconnect_attempts=3, ice_polling_timeout_ms=2_000
        )
        self.rng = random.Random(0)
        self.conn = Connection.answerer(SERVICE, config=self.config, unit_random=self.rng.random)
        self.now = 1_765_700_000_000
        self.conn.handle(Connect(now=self.now))
        self.sent: list[Any] = []
        self.replayed: list[Any] = []
        # Per attempt (each starts with its getService): [RPCs, local candidates fed].
        self.attempts: list[list[int]] = []
        self.methods: dict[int, Method] = {}
        self.closed_before = False
        self.drain()

    @rule()
    def healthy_round(self) -> None:
        """A well-behaved server and peer for one polling interval: every outstanding call
        succeeds, the local description is reported.  Without it, random replies rarely
        get an attempt past getService and the RPC budget would never be approached."""
        for call_id in sorted(self.conn.outstanding_calls()):
            if self.conn.state is State.CLOSED:
                break
            result = HEALTHY.get(self.methods.get(call_id, Method.GET_USER), {})
            self.conn.handle(RpcResult(now=self.now, call_id=call_id, outcome=RpcOk(result=result)))
            self.drain()
        pc = self.conn.pc_id
        if self.conn.state is State.GATHERING and pc is not None:
            self.conn.handle(LocalDescriptionReady(now=self.now, pc_id=pc, sdp=SDP, complete=True))
            self.drain()
        self.advance(self.config.ice_polling_interval_ms)

    def drain(self) -> None:
        acted = False
        while (action := self.conn.next_action()) is not None:
            acted = True
            if isinstance(action, SendRpc):
                self.methods[action.call_id] = action.request.method
                if action.request.method is Method.GET_SERVICE:
                    self.attempts.append([0, 0])
                self.attempts[-1][0] += 1
        assert not (acted and self.closed_before), "action after CLOSED"
        while (event := self.conn.next_event()) is not None:
            if isinstance(event, StateChanged):
                assert (State(event.old), State(event.new)) in EDGES
            if isinstance(event, ReconnectScheduled):
                assert 0 <= event.delay <= self.config.reconnect_backoff_max_ms * 1.1 + 1
            if isinstance(event, MessageReplayed):
                self.replayed.append(event.data)
        self.closed_before = self.conn.state is State.CLOSED

    @rule(kind=st.sampled_from(list(InputKind)), seed=st.integers(0, 2**16))
    def feed(self, kind: InputKind, seed: int) -> None:
        choose = random.Random(seed).choice
        calls = sorted(self.conn.outstanding_calls())
        event = arbitrary_input(kind, self.now, connection_pc(self.conn), calls, choose)
        if event is None:
            return
        if isinstance(event, SendMessage):
            event = SendMessage(now=self.now, data=f"m{len(self.sent)}")
        if isinstance(event, LocalCandidate) and self.attempts:
            self.attempts[-1][1] += 1
        try:
            self.conn.handle(event)
            if isinstance(event, SendMessage):
                self.sent.append(event.data)
        except UsageError:
            assert kind in COMMAND_KINDS
        self.drain()

    @rule(ms=st.integers(0, 40_000))
    def advance(self, ms: int) -> None:
        self.now += ms
        at = self.conn.get_timer()
        if at is not None and at <= self.now:
            self.conn.handle_timer(self.now)
        self.drain()

    @invariant()
    def closed_is_quiet(self) -> None:
        if self.conn.state is State.CLOSED:
            assert self.conn.get_timer() is None

    @invariant()
    def buffer_bounded(self) -> None:
        assert self.conn.buffered <= self.config.max_buffer_size

    @invariant()
    def replay_in_order_and_once(self) -> None:
        # Replayed messages are a subsequence of what was sent, each at most once.
        it = iter(self.sent)
        assert all(any(m == s for s in it) for m in self.replayed)

    @invariant()
    def rpcs_bounded(self) -> None:
        # Every attempt stays within the protocol's budget (getService, answerOffer,
        # single-flight polls until the polling timeout, uploads of new candidates or
        # retries on poll ticks), whatever the inputs and replies.
        for rpcs, candidates in self.attempts:
            assert rpcs <= answerer_rpc_budget(self.config, local_candidates=candidates)


class PoolMachine(RuleBasedStateMachine):
    """An offer pool fed arbitrary peer reports and server replies."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = OfferPool(
            PoolConfig(service=SERVICE, max_offers=3), unit_random=random.Random(0).random
        )
        self.now = 1_765_700_000_000
        self.applied: dict[int, int] = {}
        self.pool.handle(StartFilling(now=self.now))
        self.calls: set[int] = set()
        self.drain()

    def drain(self) -> None:
        while (action := self.pool.next_action()) is not None:
            if isinstance(action, SendRpc):
                self.calls.add(action.call_id)
        while (event := self.pool.next_event()) is not None:
            if isinstance(event, AnswerProcessed):
                self.applied[event.connection_id] = self.applied.get(event.connection_id, 0) + 1

    @rule(kind=st.sampled_from(list(InputKind)), seed=st.integers(0, 2**16), pick=st.integers())
    def feed(self, kind: InputKind, seed: int, pick: int) -> None:
        conns = list(self.pool.connections.values())
        pcs = [c.pc_id for c in conns if c.pc_id is not None] or [10**9]
        pc = pcs[pick % len(pcs)]
        calls = sorted(self.calls)
        event = arbitrary_input(kind, self.now, pc, calls, random.Random(seed).choice)
        if event is None:
            return
        if isinstance(event, RpcResult):
            self.calls.discard(event.call_id)
        try:
            self.pool.handle(event)
        except UsageError:
            assert kind in COMMAND_KINDS
        self.drain()

    @rule(ms=st.integers(0, 5000))
    def advance(self, ms: int) -> None:
        self.now += ms
        at = self.pool.get_timer()
        if at is not None and at <= self.now:
            self.pool.handle_timer(self.now)
        self.drain()

    @invariant()
    def never_more_than_max_unanswered(self) -> None:
        assert len(self.pool.unanswered()) <= self.pool.config.max_offers

    @invariant()
    def each_answer_applied_once(self) -> None:
        assert all(n == 1 for n in self.applied.values())


TestConnectionMachine = ConnectionMachine.TestCase
TestConnectionMachine.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
