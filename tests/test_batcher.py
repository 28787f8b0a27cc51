"""The RPC batcher: each rule alone, then a state machine over all of them.

The tests speak to the batcher through its machine contract only (`RpcBatcher.handle`
with the input classes); `Batcher` below merely names those inputs as verbs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from rondevu_core.batcher import (
    ERR_MALFORMED_ITEM,
    ERR_NOT_ARRAY,
    ERR_WITHDRAWN,
    AbortBatch,
    BatcherOptions,
    BatchFailed,
    BatchReply,
    BatchResult,
    BatchSent,
    CallSettled,
    ClearQueue,
    CloseBatcher,
    RpcBatcher,
    SendBatch,
    SubmitCall,
    WithdrawCall,
)
from rondevu_core.errors import UsageError
from rondevu_core.rpc import Method, RpcFailed, RpcOk, RpcOutcome, RpcRequest, Urgency

POLL = RpcRequest(method=Method.POLL, params={"since": 0})
URGENT = RpcRequest(method=Method.ANSWER_OFFER, params={}, urgency=Urgency.URGENT)
HELD = RpcRequest(method=Method.POLL, params={"since": 0, "waitMs": 25000}, urgency=Urgency.HELD)
REQUESTS = {Urgency.CAN_WAIT: POLL, Urgency.URGENT: URGENT, Urgency.HELD: HELD}


class Batcher(RpcBatcher):
    """The batcher, with each input as a verb (every one goes through `handle`)."""

    def submit(self, request: RpcRequest, now: int, *, call_id: int | None = None) -> int:
        call_id = self.free_call_id() if call_id is None else call_id
        self.handle(SubmitCall(now=now, call_id=call_id, request=request))
        return call_id

    def batch_sent_result(self, batch_id: int, result: BatchResult, now: int) -> None:
        self.handle(BatchSent(now=now, batch_id=batch_id, result=result))

    def withdraw(self, call_id: int, now: int = 0) -> bool:
        """Whether the call was still queued (and is now withdrawn)."""
        before = self.queued
        self.handle(WithdrawCall(now=now, call_id=call_id))
        return self.queued < before

    def clear(self, now: int = 0) -> None:
        self.handle(ClearQueue(now=now))

    def close(self, now: int = 0) -> None:
        self.handle(CloseBatcher(now=now))


def sends(batcher: Batcher) -> list[SendBatch]:
    out: list[SendBatch] = []
    while (action := batcher.next_action()) is not None:
        assert isinstance(action, SendBatch)
        out.append(action)
    return out


def settled(batcher: Batcher) -> dict[int, RpcOutcome]:
    out: dict[int, RpcOutcome] = {}
    while (event := batcher.next_event()) is not None:
        assert isinstance(event, CallSettled)
        assert event.call_id not in out
        out[event.call_id] = event.outcome
    return out


def ok(result: Any) -> dict[str, Any]:
    return {"success": True, "result": result}


def test_lone_call_waits_max_wait_then_goes_as_an_array() -> None:
    batcher = Batcher()
    call = batcher.submit(POLL, now=1000)
    assert sends(batcher) == []
    assert batcher.get_timer() == 1050
    batcher.handle_timer(1049)
    assert sends(batcher) == []
    batcher.handle_timer(1050)
    [batch] = sends(batcher)
    assert batch.as_array
    assert [c.call_id for c in batch.calls] == [call]
    assert batcher.get_timer() is None


def test_full_queue_goes_at_once() -> None:
    batcher = Batcher()
    ids = [batcher.submit(POLL, now=0) for _ in range(10)]
    [batch] = sends(batcher)
    assert [c.call_id for c in batch.calls] == ids
    assert batcher.queued == 0


def test_throttle_holds_a_full_batch_and_arms_the_timer() -> None:
    batcher = Batcher()
    for _ in range(10):
        batcher.submit(POLL, now=0)
    assert len(sends(batcher)) == 1
    for _ in range(10):
        batcher.submit(POLL, now=3)
    assert sends(batcher) == []
    assert batcher.get_timer() == 10
    batcher.handle_timer(10)
    assert [len(b.calls) for b in sends(batcher)] == [10]


def test_remainder_after_a_flush_is_never_stranded() -> None:
    """B10: 25 calls at once go as 10 + 10 + 5; the timer stays armed until all left."""
    batcher = Batcher()
    for _ in range(25):
        batcher.submit(POLL, now=0)
    timeline = [(0, len(b.calls)) for b in sends(batcher)]
    while (deadline := batcher.get_timer()) is not None:
        batcher.handle_timer(deadline)
        timeline += [(deadline, len(b.calls)) for b in sends(batcher)]
    # The last five were submitted at 0, so their max wait ends at 50.
    assert timeline == [(0, 10), (10, 10), (50, 5)]
    assert batcher.queued == 0


def test_each_call_settles_on_its_own_item() -> None:
    """B9: a failing sibling does not poison the others."""
    batcher = Batcher(BatcherOptions(max_batch_size=3))
    ids = [batcher.submit(POLL, now=0) for _ in range(3)]
    [batch] = sends(batcher)
    reply = [ok(1), {"success": False, "error": "Offer not found"}, ok(3)]
    batcher.batch_sent_result(batch.batch_id, BatchReply(body=reply), now=5)
    assert settled(batcher) == {
        ids[0]: RpcOk(result=1),
        ids[1]: RpcFailed(error="Offer not found"),
        ids[2]: RpcOk(result=3),
    }
    assert batcher.in_flight == 0


@pytest.mark.parametrize(
    ("body", "expected_errors"),
    [
        ({"success": True, "result": 1}, [ERR_NOT_ARRAY] * 2),
        ([ok(1)], ["Server returned 1 replies for a batch of 2 calls"] * 2),
        ([ok(1), {"success": True}], [None, "Server returned a malformed reply for this call"]),
        ([{"success": False, "error": 5}, ok(None)], ["malformed", None]),
        (["x", None], ["malformed", "malformed"]),
    ],
)
def test_malformed_replies_fail_only_what_they_must(
    body: Any, expected_errors: list[str | None]
) -> None:
    batcher = Batcher(BatcherOptions(max_batch_size=2))
    ids = [batcher.submit(POLL, now=0) for _ in range(2)]
    [batch] = sends(batcher)
    batcher.batch_sent_result(batch.batch_id, BatchReply(body=body), now=1)
    outcomes = settled(batcher)
    for call_id, expected in zip(ids, expected_errors, strict=True):
        outcome = outcomes[call_id]
        if expected is None:
            assert isinstance(outcome, RpcOk)
        else:
            assert isinstance(outcome, RpcFailed)
            assert outcome.transport
            assert expected in outcome.error


def test_transport_failure_fails_every_call_of_the_batch() -> None:
    batcher = Batcher(BatcherOptions(max_batch_size=2))
    ids = [batcher.submit(POLL, now=0) for _ in range(2)]
    [batch] = sends(batcher)
    batcher.batch_sent_result(batch.batch_id, BatchFailed(error="HTTP 502: Bad Gateway"), now=1)
    failure = RpcFailed(error="HTTP 502: Bad Gateway", transport=True)
    assert settled(batcher) == dict.fromkeys(ids, failure)


def test_disabled_sends_each_call_alone_as_an_object() -> None:
    batcher = Batcher(BatcherOptions(enabled=False))
    first, second = batcher.submit(POLL, now=0), batcher.submit(POLL, now=0)
    batches = sends(batcher)
    assert [(b.as_array, [c.call_id for c in b.calls]) for b in batches] == [
        (False, [first]),
        (False, [second]),
    ]
    assert batcher.get_timer() is None
    batcher.batch_sent_result(batches[0].batch_id, BatchReply(body=ok("a")), now=1)
    batcher.batch_sent_result(batches[1].batch_id, BatchReply(body=[ok("b")]), now=1)
    outcomes = settled(batcher)
    assert outcomes[first] == RpcOk(result="a")
    assert outcomes[second] == RpcFailed(error=ERR_MALFORMED_ITEM, transport=True)


def test_clear_fails_queued_calls_and_leaves_in_flight_ones() -> None:
    batcher = Batcher(BatcherOptions(max_batch_size=2))
    sent = [batcher.submit(POLL, now=0) for _ in range(2)]
    queued = batcher.submit(POLL, now=0)
    [batch] = sends(batcher)
    batcher.clear()
    assert settled(batcher) == {queued: RpcFailed(error="Batch queue cleared", transport=True)}
    assert batcher.get_timer() is None
    batcher.batch_sent_result(batch.batch_id, BatchReply(body=[ok(1), ok(2)]), now=1)
    assert set(settled(batcher)) == set(sent)
    batcher.submit(POLL, now=2)  # still usable
    assert batcher.queued == 1


def test_withdraw_takes_back_a_queued_call_only() -> None:
    batcher = Batcher(BatcherOptions(max_batch_size=3, max_wait_ms=50))
    sent = [batcher.submit(POLL, now=0) for _ in range(3)]
    [batch] = sends(batcher)
    first = batcher.submit(POLL, now=10)
    second = batcher.submit(POLL, now=20)
    assert batcher.get_timer() == 60  # the head, ``first``, is due 50 ms after submission
    assert batcher.withdraw(first)
    assert settled(batcher) == {first: RpcFailed(error=ERR_WITHDRAWN, transport=True)}
    assert batcher.get_timer() == 70  # now ``second`` leads the queue
    assert not batcher.withdraw(first)  # settled already: nothing to take back
    assert not batcher.withdraw(sent[0])  # in flight: it settles with its reply
    assert not batcher.withdraw(999)
    batcher.handle_timer(70)
    [later] = sends(batcher)
    assert [c.call_id for c in later.calls] == [second]  # the withdrawn call never went out
    batcher.batch_sent_result(batch.batch_id, BatchReply(body=[ok(1), ok(2), ok(3)]), now=71)
    assert settled(batcher) == {c: RpcOk(result=n) for n, c in enumerate(sent, 1)}
    assert batcher.withdraw(batcher.submit(POLL, now=80))
    assert batcher.get_timer() is None  # nothing left to wait for


def test_withdraw_after_close_changes_nothing() -> None:
    batcher = Batcher()
    call = batcher.submit(POLL, now=0)
    batcher.close()
    assert set(settled(batcher)) == {call}
    assert not batcher.withdraw(call)
    assert batcher.next_event() is None


def test_close_settles_everything_and_stops() -> None:
    batcher = Batcher(BatcherOptions(max_batch_size=2))
    in_flight = [batcher.submit(POLL, now=0) for _ in range(2)]
    [batch] = sends(batcher)
    undrained = [batcher.submit(POLL, now=20) for _ in range(2)]  # SendBatch not drained
    queued = batcher.submit(POLL, now=20)
    batcher.close()
    outcomes = settled(batcher)
    assert set(outcomes) == {*in_flight, *undrained, queued}
    assert all(isinstance(o, RpcFailed) and o.transport for o in outcomes.values())
    assert batcher.next_action() is None
    assert batcher.get_timer() is None
    batcher.batch_sent_result(batch.batch_id, BatchReply(body=[ok(1), ok(2)]), now=30)
    assert batcher.next_event() is None  # a late reply is dropped, not double-settled
    with pytest.raises(UsageError):
        batcher.submit(POLL, now=40)
    batcher.close()  # idempotent


def test_local_misuse_raises() -> None:
    batcher = Batcher()
    with pytest.raises(UsageError):
        batcher.batch_sent_result(7, BatchReply(body=[]), now=0)
    batcher.submit(POLL, now=0)
    batcher.handle_timer(50)
    [batch] = sends(batcher)
    batcher.batch_sent_result(batch.batch_id, BatchReply(body=[ok(1)]), now=51)
    with pytest.raises(UsageError):  # a batch settles once
        batcher.batch_sent_result(batch.batch_id, BatchReply(body=[ok(1)]), now=52)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch_size": 0},
        {"max_batch_size": 101},
        {"max_wait_ms": -1},
        {"throttle_interval_ms": -5},
    ],
)
def test_options_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        BatcherOptions(**kwargs)


# -- the state machine ---------------------------------------------------------------------

MALFORMED_ITEMS = [{"success": True}, {"success": "yes", "result": 1}, None, 3, "x", []]
ITEMS = st.one_of(
    st.builds(ok, st.integers()),
    st.builds(lambda e: {"success": False, "error": e}, st.text(max_size=5)),
    st.sampled_from(MALFORMED_ITEMS),
)


def item_for(call_id: int, kind: int) -> tuple[Any, RpcOutcome]:
    """A reply item unique to ``call_id`` and the outcome it must settle as."""
    if kind == 0:
        return ok(call_id), RpcOk(result=call_id)
    if kind == 1:
        return {"success": False, "error": f"e{call_id}"}, RpcFailed(error=f"e{call_id}")
    malformed = MALFORMED_ITEMS[call_id % len(MALFORMED_ITEMS)]
    return malformed, RpcFailed(error=ERR_MALFORMED_ITEM, transport=True)


class BatcherMachine(RuleBasedStateMachine):
    """A driver that calls `handle_timer` on time, replies in any order, clears and closes."""

    def __init__(self) -> None:
        super().__init__()
        self.batcher = Batcher()
        self.now = 0
        self.submitted: dict[int, int] = {}  # call id -> submit time
        self.settled: dict[int, RpcOutcome] = {}
        self.expected: dict[int, RpcOutcome] = {}
        self.in_flight: dict[int, SendBatch] = {}
        self.last_send: int | None = None
        self.withdrawn: set[int] = set()
        self.urgency: dict[int, Urgency] = {}
        self.sent: set[int] = set()  # calls that went out in some batch
        self.aborted: set[int] = set()  # held calls withdrawn in flight

    @initialize(
        options=st.builds(
            BatcherOptions,
            max_batch_size=st.integers(1, 12),
            max_wait_ms=st.integers(0, 60),
            throttle_interval_ms=st.integers(0, 30),
            enabled=st.booleans(),
        )
    )
    def start(self, options: BatcherOptions) -> None:
        self.batcher = Batcher(options)

    def is_held(self, batch: SendBatch) -> bool:
        return any(self.urgency[c.call_id] is Urgency.HELD for c in batch.calls)

    def idle(self) -> bool:
        """No request in flight but held ones: what lets an urgent call leave at once."""
        return all(self.is_held(batch) for batch in self.in_flight.values())

    def urgent_queued(self) -> bool:
        return any(
            u is Urgency.URGENT and c not in self.sent and c not in self.settled
            for c, u in self.urgency.items()
        )

    def drain(self) -> None:
        options = self.batcher.options
        while (action := self.batcher.next_action()) is not None:
            assert not self.batcher.closed
            if isinstance(action, AbortBatch):
                aborted = self.in_flight.pop(action.batch_id)
                assert self.is_held(aborted), "only a held request is abandoned"
                self.aborted.add(aborted.calls[0].call_id)
                continue
            assert isinstance(action, SendBatch)
            assert 1 <= len(action.calls) <= options.max_batch_size
            ids = {c.call_id for c in action.calls}
            assert not ids & self.withdrawn, "withdrawn call sent"
            assert not ids & self.sent, "a call sent twice"
            assert action.as_array is options.enabled
            held = self.is_held(action)
            if held:
                assert len(action.calls) == 1, "a held call shares its request"
            # The throttle spaces batches of calls that can wait; an urgent call with
            # nothing in flight, and a held call, leave at once.
            exempt = held or (self.idle() and self.urgent_queued())
            if options.enabled and not exempt and self.last_send is not None:
                assert self.now - self.last_send >= options.throttle_interval_ms
            if not held:
                self.last_send = self.now
            self.sent |= ids
            self.in_flight[action.batch_id] = action
        while (event := self.batcher.next_event()) is not None:
            assert isinstance(event, CallSettled)
            assert event.call_id in self.submitted
            assert event.call_id not in self.settled, "a call settled twice"
            self.settled[event.call_id] = event.outcome
            if event.call_id in self.expected:
                assert event.outcome == self.expected.pop(event.call_id)

    @precondition(lambda self: not self.batcher.closed)
    @rule(urgencies=st.lists(st.sampled_from(Urgency), min_size=1, max_size=15))
    def submit(self, urgencies: list[Urgency]) -> None:
        for urgency in urgencies:
            idle = self.idle()
            call_id = self.batcher.submit(REQUESTS[urgency], self.now)
            assert call_id not in self.submitted
            self.submitted[call_id] = self.now
            self.urgency[call_id] = urgency
            self.drain()
            if urgency is Urgency.HELD or (urgency is Urgency.URGENT and idle):
                # Out at once, never waiting for max_wait_ms.
                assert call_id in self.sent

    @rule(dt=st.integers(0, 70))
    def advance(self, dt: int) -> None:
        target = self.now + dt
        while (deadline := self.batcher.get_timer()) is not None and deadline <= target:
            self.now = max(self.now, deadline)
            self.batcher.handle_timer(self.now)
            self.drain()
        self.now = target
        self.batcher.handle_timer(self.now)  # an early or late wake-up is harmless
        self.drain()

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data(), transport_failure=st.booleans(), well_formed=st.booleans())
    def reply(self, data: st.DataObject, transport_failure: bool, well_formed: bool) -> None:
        batch_id = data.draw(st.sampled_from(sorted(self.in_flight)))
        batch = self.in_flight.pop(batch_id)
        closed = self.batcher.closed
        if transport_failure:
            self.batcher.batch_sent_result(batch_id, BatchFailed(error="down"), self.now)
        elif well_formed:
            kinds = data.draw(st.lists(st.integers(0, 2), min_size=len(batch.calls)))
            pairs = [item_for(c.call_id, k) for c, k in zip(batch.calls, kinds, strict=False)]
            body: Any = [item for item, _ in pairs] if batch.as_array else pairs[0][0]
            if not closed:
                for call, (_, outcome) in zip(batch.calls, pairs, strict=True):
                    self.expected[call.call_id] = outcome
            self.batcher.batch_sent_result(batch_id, BatchReply(body=body), self.now)
        else:
            body = data.draw(st.one_of(st.none(), st.integers(), st.lists(ITEMS, max_size=3)))
            self.batcher.batch_sent_result(batch_id, BatchReply(body=body), self.now)
        self.drain()
        if not closed:
            assert all(call.call_id in self.settled for call in batch.calls)

    @rule(pick=st.integers(0, 50))
    def withdraw(self, pick: int) -> None:
        if not self.submitted:
            return
        call_id = sorted(self.submitted)[pick % len(self.submitted)]
        queued_before = self.batcher.queued
        withdrawn = self.batcher.withdraw(call_id)
        self.drain()
        if withdrawn:
            assert self.settled[call_id] == RpcFailed(error=ERR_WITHDRAWN, transport=True)
            assert self.batcher.queued == queued_before - 1
            self.withdrawn.add(call_id)
        else:
            assert self.batcher.queued == queued_before
            if call_id in self.aborted:
                assert self.settled[call_id] == RpcFailed(error=ERR_WITHDRAWN, transport=True)

    @rule()
    def clear(self) -> None:
        self.batcher.clear()
        self.drain()
        assert self.batcher.queued == 0

    @rule()
    def close(self) -> None:
        self.batcher.close()
        self.drain()

    @invariant()
    def every_call_is_accounted_for(self) -> None:
        b = self.batcher
        assert len(self.settled) + b.queued + b.in_flight == len(self.submitted)

    @invariant()
    def no_urgent_call_waits_while_nothing_is_in_flight(self) -> None:
        if not self.batcher.closed and self.idle():
            assert not self.urgent_queued()

    @invariant()
    def nothing_waits_without_a_timer(self) -> None:
        if self.batcher.queued:
            assert self.batcher.get_timer() is not None

    @invariant()
    def closed_means_done(self) -> None:
        if self.batcher.closed:
            assert self.batcher.get_timer() is None
            assert self.batcher.queued == 0
            assert self.batcher.in_flight == 0
            assert set(self.settled) == set(self.submitted)

    def teardown(self) -> None:
        """Run the clock out and answer everything: every call must have settled once."""
        if not self.batcher.closed:
            self.advance(10_000)
            assert self.batcher.queued == 0
            for batch_id, batch in sorted(self.in_flight.items()):
                body = [ok(None)] * len(batch.calls) if batch.as_array else ok(None)
                self.batcher.batch_sent_result(batch_id, BatchReply(body=body), self.now)
            self.in_flight.clear()
            self.drain()
        assert set(self.settled) == set(self.submitted)
        assert not self.expected


TestBatcherMachine = BatcherMachine.TestCase
TestBatcherMachine.settings = settings(
    max_examples=60, stateful_step_count=30, suppress_health_check=[HealthCheck.too_slow]
)


def test_driver_can_reuse_the_machines_call_ids() -> None:
    batcher = Batcher(BatcherOptions(max_batch_size=2))
    assert batcher.submit(POLL, now=0, call_id=7) == 7
    with pytest.raises(UsageError):
        batcher.submit(POLL, now=0, call_id=7)  # still queued
    assert batcher.submit(POLL, now=0) == 1
    [batch] = sends(batcher)
    batcher.batch_sent_result(batch.batch_id, BatchReply(body=[ok("a"), ok("b")]), now=1)
    assert settled(batcher) == {7: RpcOk(result="a"), 1: RpcOk(result="b")}
    assert batcher.submit(POLL, now=2, call_id=7) == 7  # settled ids may come back
    assert batcher.submit(POLL, now=2, call_id=2) == 2
    assert batcher.submit(POLL, now=2) == 3  # the counter skips ids in use


def test_an_urgent_call_leaves_at_once_when_nothing_is_in_flight() -> None:
    batcher = Batcher(BatcherOptions(max_wait_ms=50, throttle_interval_ms=10))
    waiting = batcher.submit(POLL, now=0)
    urgent = batcher.submit(URGENT, now=3)
    [batch] = sends(batcher)  # at 3, not at 50, and the waiting call rides along
    assert [c.call_id for c in batch.calls] == [waiting, urgent]
    batcher.batch_sent_result(batch.batch_id, BatchReply(body=[ok(1), ok(2)]), now=4)
    batcher.submit(URGENT, now=5)  # inside the throttle: still at once
    assert len(sends(batcher)) == 1


def test_an_urgent_call_takes_the_seat_of_a_call_that_can_wait() -> None:
    # Found by hypothesis: with one seat per batch the waiting call at the head left
    # first and the urgent call stayed behind the throttle.
    batcher = Batcher(BatcherOptions(max_batch_size=1, max_wait_ms=0, throttle_interval_ms=5))
    batcher.submit(POLL, now=0)
    [first] = sends(batcher)
    batcher.batch_sent_result(first.batch_id, BatchReply(body=[ok(1)]), now=0)
    waiting = batcher.submit(POLL, now=0)  # inside the throttle: queued
    assert sends(batcher) == []
    urgent = batcher.submit(URGENT, now=0)
    [batch] = sends(batcher)
    assert [c.call_id for c in batch.calls] == [urgent]
    assert batcher.get_timer() == 5  # the waiting call keeps its own schedule
    batcher.handle_timer(5)
    assert [c.call_id for b in sends(batcher) for c in b.calls] == [waiting]


def test_an_urgent_call_waits_for_the_request_in_flight_at_most() -> None:
    batcher = Batcher(BatcherOptions(max_wait_ms=50))
    batcher.submit(URGENT, now=0)
    [first] = sends(batcher)
    batcher.submit(URGENT, now=1)
    assert sends(batcher) == []
    assert batcher.get_timer() == 51
    batcher.batch_sent_result(first.batch_id, BatchReply(body=[ok(1)]), now=7)
    [second] = sends(batcher)  # the reply, not max_wait_ms, let it go
    assert len(second.calls) == 1


def test_a_held_call_goes_alone_and_does_not_hold_urgent_ones() -> None:
    batcher = Batcher(BatcherOptions(max_wait_ms=50))
    waiting = batcher.submit(POLL, now=0)
    held = batcher.submit(HELD, now=1)
    [alone] = sends(batcher)
    assert [c.call_id for c in alone.calls] == [held]
    assert alone.as_array
    assert batcher.held == 1
    assert batcher.queued == 1
    urgent = batcher.submit(URGENT, now=2)
    [batch] = sends(batcher)  # the held request in flight does not count
    assert [c.call_id for c in batch.calls] == [waiting, urgent]


def test_disabled_batching_sends_held_calls_as_objects_too() -> None:
    batcher = Batcher(BatcherOptions(enabled=False))
    batcher.submit(HELD, now=0)
    [batch] = sends(batcher)
    assert not batch.as_array
    assert batcher.held == 1


def test_withdrawing_a_held_call_in_flight_abandons_its_request() -> None:
    batcher = Batcher()
    held = batcher.submit(HELD, now=0)
    [batch] = sends(batcher)
    batcher.withdraw(held, now=5)
    assert batcher.next_action() == AbortBatch(batch_id=batch.batch_id)
    assert settled(batcher) == {held: RpcFailed(error=ERR_WITHDRAWN, transport=True)}
    assert batcher.in_flight == 0
    assert batcher.held == 0
    urgent = batcher.submit(URGENT, now=6)
    [other] = sends(batcher)
    batcher.batch_sent_result(other.batch_id, BatchReply(body=[ok(1)]), now=7)
    batcher.withdraw(urgent, now=8)  # settled already: nothing to abandon
    assert batcher.next_action() is None
