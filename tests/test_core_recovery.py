"""Recovery rules of the core (issue #11): which errors are retried, when a publisher
republishes, and how soon an attempt on a dead offer fails.  The machines are driven by
hand on an integer clock, the test playing the server and the WebRTC driver.
"""

from __future__ import annotations

import random
from typing import ClassVar, Literal

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fuzz._inputs import SDP as SDP_TEMPLATE
from rondevu_core.actions import CancelRpc, SendRpc
from rondevu_core.config import ConnectionConfig, PoolConfig
from rondevu_core.connection import Connection, State
from rondevu_core.events import Failed, PermanentError, ServiceRepublished
from rondevu_core.inputs import Connect, LocalDescriptionReady, RpcResult, StartFilling
from rondevu_core.pool import LOOK_INTERVAL_HELD_MS, OfferPool, PoolState
from rondevu_core.rpc import Method, RpcFailed, RpcOk, RpcOutcome, RpcRequest, Urgency
from rondevu_core.rules.error_kinds import (
    IDENTITY_PREFIXES,
    PERMANENT_PREFIXES,
    ErrorKind,
    classify,
    is_permanent,
)
from rondevu_core.rules.republish import REASON_GONE, REASON_REPLACED, PresenceRule
from tests.fakes.signaling import FakeSignalingServer
from tests.test_core_events import OFFER_ID, SDP, Driver, pc_of, published, published_pool
from tests.test_core_harness import SERVICE
from tests.test_core_longpoll import UNIX as LONG_UNIX
from tests.test_core_longpoll import WAIT as LONG_WAIT
from tests.test_core_longpoll import Pool as LongPollPool
from tests.test_core_longpoll import ok as longpoll_ok
from tests.test_core_longpoll import sends as longpoll_sends

# -- error kinds ----------------------------------------------------------------------


def test_the_texts_the_issue_names_are_classified() -> None:
    assert classify("Invalid signature") is ErrorKind.IDENTITY
    assert classify("Username already claimed by different public key") is ErrorKind.IDENTITY
    assert classify("Unknown method: frobnicate") is ErrorKind.PERMANENT
    assert classify("Service FQN must be in format: service:version[@username]").permanent
    assert classify("Invalid offer at index 2: SDP cannot be empty").permanent
    for temporary in (
        "Service not found",
        "Service has no available offers",
        "Rate limit exceeded, slow down",
        "Server offer capacity reached, try again later",
        "Internal server error",
        "Offer already answered",
        "Offer not found",
    ):
        assert classify(temporary) is ErrorKind.TEMPORARY, temporary


@given(st.text(max_size=80))
def test_unknown_texts_are_temporary_and_transport_never_permanent(text: str) -> None:
    if not text.startswith(IDENTITY_PREFIXES + PERMANENT_PREFIXES):
        assert classify(text) is ErrorKind.TEMPORARY
        assert not is_permanent(RpcFailed(error=text))
    # No server answered: whatever the text says, a retry may work.
    assert not is_permanent(RpcFailed(error=text, transport=True))
    assert not is_permanent(RpcOk(result=text))


@given(st.sampled_from(IDENTITY_PREFIXES + PERMANENT_PREFIXES), st.text(max_size=20))
def test_a_known_prefix_is_permanent_whatever_follows(prefix: str, tail: str) -> None:
    assert classify(prefix + tail).permanent
    assert is_permanent(RpcFailed(error=prefix + tail))


# -- the presence rule ----------------------------------------------------------------

OURS = frozenset({"a" * 64, "b" * 64})
_OUTCOMES: list[RpcOutcome] = [
    RpcFailed(error="Service not found"),
    RpcFailed(error="Service has no available offers"),
    RpcFailed(error="Service not found", transport=True),
    RpcFailed(error="Rate limit exceeded, slow down"),
    RpcOk(result={"offerId": "a" * 64, "sdp": SDP}),
    RpcOk(result={"offerId": "c" * 64, "sdp": SDP}),
    RpcOk(result={"nope": 1}),
]


class PresenceMachine(RuleBasedStateMachine):
    """The rule against random replies, checked against a plain model."""

    def __init__(self) -> None:
        super().__init__()
        self.rule = PresenceRule()
        self.run: list[str] = []  # the current streak of one ambiguous reason

    @rule(outcome=st.sampled_from(_OUTCOMES), have=st.booleans())
    def look(self, outcome: RpcOutcome, have: bool) -> None:
        published = OURS if have else frozenset()
        verdict = self.rule.judge(outcome, published)
        absence = None
        if have and isinstance(outcome, RpcFailed) and not outcome.transport:
            if outcome.error == "Service not found":
                absence = REASON_GONE
            elif "no available" in outcome.error:
                absence = "none"
        elif have and isinstance(outcome, RpcOk) and "offerId" in outcome.result:
            absence = None if outcome.result["offerId"] in OURS else REASON_REPLACED
        if absence is None:
            assert verdict is None  # our offer seen, or no conclusion: never republish
            self.run = []
        elif absence == REASON_GONE:
            assert verdict == REASON_GONE  # at once: nothing of ours is left to break
            self.run = []
        else:
            self.run = [*self.run, absence] if self.run[-1:] == [absence] else [absence]
            # An ambiguous absence counts only when the next look agrees.
            assert (verdict is not None) == (len(self.run) == 2)
            if verdict is not None:
                self.run = []

    @invariant()
    def strikes_stay_below_the_threshold(self) -> None:
        assert 0 <= self.rule.strikes < 2


TestPresenceMachine = PresenceMachine.TestCase


# -- the pool republishes what the server lost ------------------------------------------------


def _running_pool() -> Driver:
    d, actions = published_pool()
    d.reply(d.call(Method.PUBLISH_SERVICE, actions), published())
    return d


def _answer_poll_and_look(d: Driver, look: RpcOutcome) -> list[object]:
    """One poll interval: the poll finds nothing new, the look gets ``look``."""
    due = d.advance(1000)
    d.reply(d.call(Method.POLL, due), RpcOk(result={"answers": [], "iceCandidates": {}}))
    check = d.call(Method.GET_SERVICE, due)
    assert check.request.params == {"serviceFqn": str(SERVICE)}
    return list(d.reply(check, look))


def test_a_service_gone_from_the_server_is_republished_within_one_poll_interval() -> None:
    d = _running_pool()
    # A healthy look changes nothing.
    assert _answer_poll_and_look(d, RpcOk(result={"offerId": OFFER_ID, "sdp": SDP})) == []
    # The server restarted: the very next look sees the service gone and republishes.
    again = _answer_poll_and_look(d, RpcFailed(error="Service not found"))
    retry = d.call(Method.PUBLISH_SERVICE, again)  # type: ignore[arg-type]
    assert retry.request.params["offers"] == [{"sdp": SDP}]
    d.reply(retry, published())
    (event,) = d.named("service:republished")
    assert isinstance(event, ServiceRepublished)
    assert event.reason == REASON_GONE
    assert event.offer_ids == (OFFER_ID,)


def test_offers_replaced_by_another_process_are_republished_after_a_second_look() -> None:
    d = _running_pool()
    foreign = RpcOk(result={"offerId": "f" * 64, "sdp": SDP})
    assert _answer_poll_and_look(d, foreign) == []  # maybe an answer the poll will bring
    again = _answer_poll_and_look(d, foreign)
    d.reply(d.call(Method.PUBLISH_SERVICE, again), published())  # type: ignore[arg-type]
    (event,) = d.named("service:republished")
    assert isinstance(event, ServiceRepublished)
    assert event.reason == REASON_REPLACED


def test_a_server_that_cannot_be_reached_causes_no_republish() -> None:
    d = _running_pool()
    for _ in range(5):
        assert _answer_poll_and_look(d, RpcFailed(error="connect refused", transport=True)) == []
    assert d.named("service:republished") == []
    # Each look that got no answer is reported, pool-wide.
    errors = d.named("signaling:error")
    assert [(e.connection_id, getattr(e, "operation", None)) for e in errors] == [
        (0, "getService")
    ] * 5


# -- permanent errors are not retried -------------------------------------------------------


def test_a_publish_refused_for_our_identity_stops_the_pool_without_retries() -> None:
    d, actions = published_pool()
    d.reply(d.call(Method.PUBLISH_SERVICE, actions), RpcFailed(error="Invalid signature"))
    (permanent,) = d.named("error:permanent")
    assert isinstance(permanent, PermanentError)
    assert (permanent.kind, permanent.operation) == ("identity", "publishService")
    assert d.named("offers:publish:failed")
    later = d.advance(120_000)
    assert not any(getattr(a, "request", None) for a in later), later
    assert d.machine.state is PoolState.IDLE


def _answerer(config: ConnectionConfig | None = None) -> tuple[Driver, Connection]:
    conn = Connection.answerer(
        SERVICE,
        config=config or ConnectionConfig(max_reconnect_attempts=0),
        unit_random=random.Random(5).random,
    )
    return Driver(conn), conn


def test_an_unknown_method_fails_the_connection_at_once() -> None:
    d, conn = _answerer()
    fetch = d.call(Method.GET_SERVICE, d.feed(Connect(now=d.now)))
    d.reply(fetch, RpcFailed(error="Unknown method: getService"))
    (failed,) = d.named("failed")
    assert isinstance(failed, Failed)
    assert failed.final
    assert d.named("reconnect:scheduled") == []
    assert conn.terminal
    (permanent,) = d.named("error:permanent")
    assert isinstance(permanent, PermanentError)
    assert permanent.kind == "permanent"


def test_an_absent_service_is_retried_without_a_limit() -> None:
    d, conn = _answerer()
    actions = d.feed(Connect(now=d.now))
    for attempt in range(1, 12):
        d.reply(d.call(Method.GET_SERVICE, actions), RpcFailed(error="Service not found"))
        assert not conn.terminal
        assert len(d.named("reconnect:scheduled")) == attempt
        delay = d.named("reconnect:scheduled")[-1].delay  # type: ignore[attr-defined]
        assert delay <= 33_000  # capped: 30 s, +10 % jitter
        actions = d.advance(delay)
    assert d.named("error:permanent") == []


# -- an attempt on a dead offer fails fast ----------------------------------------------------


def test_an_answered_offer_that_never_connects_fails_within_the_handshake_bound() -> None:
    d, conn = _answerer(ConnectionConfig(handshake_timeout_ms=3000))
    fetch = d.call(Method.GET_SERVICE, d.feed(Connect(now=d.now)))
    created = d.reply(fetch, RpcOk(result={"offerId": OFFER_ID, "sdp": SDP, "username": "alice"}))
    pc = pc_of(created)
    answer = d.call(
        Method.ANSWER_OFFER,
        d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=True)),
    )
    d.reply(answer, RpcOk(result={"success": True, "offerId": OFFER_ID}))
    d.advance(2999)
    assert d.named("failed") == []
    d.advance(1)
    (failed,) = d.named("failed")
    assert isinstance(failed, Failed)
    assert failed.error == "No ICE connection within 3000 ms of the answer"
    assert not failed.final
    assert conn.state is State.RECONNECTING


# -- a pool against a server that forgets -----------------------------------------------------


class ForgetfulServerPool(RuleBasedStateMachine):
    """An offer pool whose calls run against the fake server, which restarts (forgets
    everything), loses calls, or sees another process with the same identity publish
    over the pool.  Whatever happened, a few healthy poll intervals later the server
    holds exactly the pool's published offers again."""

    mode: ClassVar[Literal["ours", "upstream"]] = "ours"

    def __init__(self) -> None:
        super().__init__()
        self.server = FakeSignalingServer(mode=self.mode)
        self.pool = OfferPool(
            PoolConfig(service=SERVICE, max_offers=2), unit_random=random.Random(0).random
        )
        self.now = 1_765_700_000_000
        self.foreign = 0
        self.pool.handle(StartFilling(now=self.now))
        self.settle()

    def settle(self) -> None:
        """Run every call against the server and deliver its reply; ready every offer."""
        for _ in range(100):
            progressed = False
            for conn in self.pool.unanswered():
                if conn.state is State.GATHERING and conn.pc_id and conn.offer_sdp is None:
                    sdp = SDP_TEMPLATE.replace("o=- 9 ", f"o=- {conn.pc_id} ")
                    self.pool.handle(
                        LocalDescriptionReady(
                            now=self.now, pc_id=conn.pc_id, sdp=sdp, complete=True
                        )
                    )
                    progressed = True
            calls = []
            while (action := self.pool.next_action()) is not None:
                if isinstance(action, SendRpc):
                    calls.append(
                        (action.call_id, self.server.call("alice", action.request, self.now))
                    )
            while self.pool.next_event() is not None:
                pass
            for call_id, outcome in calls:
                self.pool.handle(
                    RpcResult(now=self.now, call_id=call_id, outcome=outcome, unix_ms=self.now)
                )
                progressed = True
            if not progressed:
                return
        raise AssertionError("the pool never settles")

    def advance(self, ms: int) -> None:
        end = self.now + ms
        while (at := self.pool.get_timer()) is not None and at <= end:
            self.now = max(self.now, at)
            self.pool.handle_timer(self.now)
            self.settle()
        self.now = end

    @rule()
    def server_restarts(self) -> None:
        self.server = FakeSignalingServer(mode=self.mode)

    @rule()
    def another_process_publishes(self) -> None:
        self.foreign += 1
        sdp = SDP_TEMPLATE.replace("o=- 9 ", f"o=- 7{self.foreign} ")
        request = RpcRequest(
            method=Method.PUBLISH_SERVICE,
            params={"serviceFqn": str(SERVICE), "offers": [{"sdp": sdp}], "ttl": 300_000},
        )
        self.server.call("alice", request, self.now)  # lost itself, maybe

    @rule(method=st.sampled_from([Method.GET_SERVICE, Method.POLL, Method.PUBLISH_SERVICE]))
    def a_call_is_lost(self, method: Method) -> None:
        self.server.fail_next(method, execute=False)

    @rule(ms=st.integers(0, 3000))
    def time_passes(self, ms: int) -> None:
        self.advance(ms)

    @rule()
    def healthy_intervals(self) -> None:
        # At most one call of each method is lost at a time (a lost look, then two looks
        # to agree on an ambiguous absence, then a lost publish retried after its
        # backoff of about a second): six intervals cover the worst case.
        for _ in range(6):
            self.advance(self.pool.config.poll_interval_ms)
        services = {s.id for s in self.server.services if s.fqn == str(SERVICE)}
        on_server = {
            o.id
            for o in self.server.offers
            if o.service_id in services and o.answerer is None and o.expires_at > self.now
        }
        published = {c.offer_id for c in self.pool.unanswered() if c.offer_id is not None}
        assert on_server == published
        assert len(published) == self.pool.config.max_offers

    @invariant()
    def keeps_filling(self) -> None:
        # Nothing here is permanent: the pool never gives up.
        assert self.pool.state is PoolState.FILLING


class ForgetfulUpstreamServerPool(ForgetfulServerPool):
    """The same against 0.5.4 (no ``keepsAnsweredOffers``)."""

    mode = "upstream"


TestForgetfulServerPool = ForgetfulServerPool.TestCase
TestForgetfulServerPool.settings = settings(max_examples=30, stateful_step_count=20, deadline=None)
TestForgetfulUpstreamServerPool = ForgetfulUpstreamServerPool.TestCase
TestForgetfulUpstreamServerPool.settings = settings(
    max_examples=30, stateful_step_count=20, deadline=None
)


# -- looks while polls are held ------------------------------------------------------------


def test_with_held_polls_a_poll_back_after_an_outage_brings_the_look_forward() -> None:
    pool = LongPollPool(LONG_WAIT)
    [held] = pool.after_publish
    assert held.request.params.get("waitMs") == LONG_WAIT
    # The server went away: the held poll fails, and the next one waits the interval.
    pool.machine.handle(
        RpcResult(
            now=10,
            call_id=held.call_id,
            outcome=RpcFailed(error="connection reset", transport=True),
            unix_ms=LONG_UNIX,
        )
    )
    assert longpoll_sends(pool.machine) == []
    [plain] = [c for c in pool.timer(1010) if c.request.method is Method.POLL]
    # It is back: the first poll that succeeds sends the look at once, not in 60 s.
    after = longpoll_ok(pool.machine, plain, {"answers": [], "iceCandidates": {}}, now=1020)
    assert pool.machine.get_timer() == 1020
    pool.machine.handle_timer(1020)
    calls = after + longpoll_sends(pool.machine)
    [look] = [c for c in calls if c.request.method is Method.GET_SERVICE]
    # Before the look's reply, the poll goes out again and is held.
    pool.machine.handle_timer(2020)
    [held_again] = longpoll_sends(pool.machine)
    assert held_again.request.urgency is Urgency.HELD
    # The restarted server forgot the service: the pool republishes at once, and
    # cancels the held poll rather than wait for it (a poll only reads).
    pool.machine.handle(
        RpcResult(
            now=2030,
            call_id=look.call_id,
            outcome=RpcFailed(error="Service not found"),
            unix_ms=LONG_UNIX,
        )
    )
    actions = []
    while (action := pool.machine.next_action()) is not None:
        actions.append(action)
    republished = [a for a in actions if isinstance(a, SendRpc)]
    assert [c.request.method for c in republished] == [Method.PUBLISH_SERVICE]
    assert [a.call_id for a in actions if isinstance(a, CancelRpc)] == [held_again.call_id]


def test_with_held_polls_the_look_is_spaced_out() -> None:
    pool = LongPollPool(LONG_WAIT)
    # Idle, polls held: no look for the first minute (a request a second would cost
    # what holding the poll saves), then one.
    timer = pool.machine.get_timer()
    assert timer is not None
    assert timer >= LOOK_INTERVAL_HELD_MS
    pool.machine.handle_timer(LOOK_INTERVAL_HELD_MS)
    calls = longpoll_sends(pool.machine)
    assert [c.request.method for c in calls] == [Method.GET_SERVICE]
    assert calls[0].request.urgency is not Urgency.HELD  # never waits behind the poll


def test_with_held_polls_an_early_empty_reply_brings_the_look_forward() -> None:
    # What a server that shuts down answers to the polls it holds: it may be back, with
    # nothing of ours, before the next poll.
    pool = LongPollPool(LONG_WAIT)
    [held] = pool.after_publish
    assert longpoll_ok(pool.machine, held, {"answers": [], "iceCandidates": {}}, now=5) == []
    pool.machine.handle_timer(1005)
    methods = [c.request.method for c in longpoll_sends(pool.machine)]
    assert Method.GET_SERVICE in methods
