"""Long polling in the core: when the machines ask the server to hold a call, and when not.

The pool and the answerer's session are driven by hand (every input through `handle`),
so each test names the exact replies and times the rule depends on.  Against a server
that does not hold calls (``long_poll_wait_ms=0``) nothing may change on the wire.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rondevu_core.actions import CancelRpc, SendRpc
from rondevu_core.config import ConnectionConfig, PoolConfig
from rondevu_core.connection import Connection
from rondevu_core.inputs import (
    Connect,
    IceConnectionStateChanged,
    LocalDescriptionReady,
    PeerConnectionStateChanged,
    RpcResult,
    StartFilling,
)
from rondevu_core.pool import OfferPool
from rondevu_core.rpc import Method, RpcFailed, RpcOk, Urgency
from rondevu_core.rules.fqn import validate_service_fqn
from rondevu_core.rules.sdp import gathering_complete
from rondevu_core.rules.server_info import (
    LONG_POLL_CAP_MS,
    LONG_POLL_MIN_MS,
    LONG_POLL_TIMEOUT_MARGIN_MS,
    advertised_long_poll_ms,
    long_poll_wait_ms,
)

WAIT = 25_000
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2122260223 10.0.9.1 5001 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}
UNIX = 1_800_000_000_000  # the wall clock of every reply
OFFER_ID = "ab" * 32
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 x\r\na=mid:0\r\n"
SDP_DONE = SDP + "a=candidate:1 1 udp 2122260223 127.0.0.1 5001 typ host\r\na=end-of-candidates\r\n"


def sends(machine: Any) -> list[SendRpc]:
    out = []
    while (action := machine.next_action()) is not None:
        if isinstance(action, SendRpc):
            out.append(action)
    while machine.next_event() is not None:
        pass
    return out


def ok(machine: Any, call: SendRpc, result: Any, now: int) -> list[SendRpc]:
    machine.handle(
        RpcResult(now=now, call_id=call.call_id, outcome=RpcOk(result=result), unix_ms=UNIX)
    )
    return sends(machine)


def empty_poll() -> dict[str, Any]:
    return {"answers": [], "iceCandidates": {}}


class Pool:
    """An offer pool of one offer, published; ``poll`` is the poll now in flight."""

    def __init__(
        self, wait: int, *, ttl_ms: int = 300_000, look_interval_ms: int | None = None
    ) -> None:
        config = PoolConfig(
            service=validate_service_fqn("svc:1.0.0@alice"),
            ttl_ms=ttl_ms,
            look_interval_ms=look_interval_ms,
            # The scripted publish reply echoes SDP_DONE as fed; the session layer would
            # annotate the published copy (tests/test_core_layer.py covers it).
            connection=ConnectionConfig(long_poll_wait_ms=wait, session=None),
        )
        self.machine = OfferPool(config, unit_random=lambda: 0.5)
        self.machine.handle(StartFilling(now=0))
        sends(self.machine)
        [conn] = self.machine.connections.values()
        assert conn.pc_id is not None
        self.machine.handle(
            LocalDescriptionReady(now=1, pc_id=conn.pc_id, sdp=SDP_DONE, complete=True)
        )
        [publish] = sends(self.machine)
        assert publish.request.method is Method.PUBLISH_SERVICE
        assert publish.request.urgency is Urgency.URGENT  # a new offer: a peer waits on it
        self.after_publish = ok(
            self.machine,
            publish,
            {"offers": [{"offerId": OFFER_ID, "sdp": SDP_DONE}], "keepsAnsweredOffers": True},
            now=2,
        )

    def timer(self, now: int) -> list[SendRpc]:
        self.machine.handle_timer(now)
        return self.without_looks(sends(self.machine), now)

    def without_looks(self, calls: list[SendRpc], now: int) -> list[SendRpc]:
        """The calls, less the pool's looks at its own service (docs/recovery.md), each
        answered with our offer: they neither hold nor wait for the poll."""
        out = []
        for call in calls:
            if call.request.method is Method.GET_SERVICE:
                assert call.request.urgency is not Urgency.HELD
                found = {"offerId": OFFER_ID, "sdp": SDP_DONE}
                out += self.without_looks(ok(self.machine, call, found, now), now)
            else:
                out.append(call)
        return out


def test_without_the_extension_the_pool_polls_as_the_original() -> None:
    pool = Pool(0)
    assert pool.after_publish == []  # the poll waits for its interval, as in 0.18.9
    assert pool.machine.get_timer() == 1000
    [poll] = pool.timer(1000)
    assert poll.request.params == {"since": 0}
    assert poll.request.urgency is Urgency.CAN_WAIT
    assert ok(pool.machine, poll, empty_poll(), now=1001) == []
    [again] = pool.timer(2000)
    assert again.request.params == {"since": 0}


def test_the_pool_holds_its_poll_at_once_and_again_after_a_full_hold() -> None:
    pool = Pool(WAIT)
    [poll] = pool.after_publish  # no interval first
    assert poll.request.params == {"since": 0, "waitMs": WAIT}
    assert poll.request.urgency is Urgency.HELD
    deadline = pool.machine.get_timer()  # the refresh, not a poll tick
    assert deadline is not None
    assert deadline > 25_000
    [again] = ok(pool.machine, poll, empty_poll(), now=2 + WAIT)  # the hold ran out
    assert again.request.params == {"since": 0, "waitMs": WAIT}


def test_an_early_empty_reply_falls_back_to_the_interval_once() -> None:
    pool = Pool(WAIT)
    [poll] = pool.after_publish
    # Answered at once with nothing: the server did not hold it (a bound, a shutdown).
    assert ok(pool.machine, poll, empty_poll(), now=5) == []
    assert pool.machine.get_timer() == 1005
    [again] = pool.timer(1005)
    assert again.request.params["waitMs"] == WAIT


def test_news_costs_one_lagged_read_then_the_exact_cursor_is_held() -> None:
    pool = Pool(WAIT)
    [poll] = pool.after_publish
    answer = {"offerId": OFFER_ID, "answererId": "bob", "sdp": SDP_DONE, "answeredAt": UNIX - 50}
    # The answer arrives; the refill's new offer must be published before a hold.
    after = ok(pool.machine, poll, {"answers": [answer], "iceCandidates": {}}, now=100)
    assert [c.request.method for c in after] == []  # its offer is still being created
    fresh = [c for c in pool.machine.connections.values() if c.offer_id is None]
    assert len(fresh) == 1
    assert fresh[0].pc_id is not None
    pool.machine.handle(
        LocalDescriptionReady(now=101, pc_id=fresh[0].pc_id, sdp=SDP, complete=True)
    )
    [publish] = sends(pool.machine)
    assert publish.request.method is Method.PUBLISH_SERVICE
    published = {
        "offers": [{"offerId": "cd" * 32, "sdp": SDP}],
        "keepsAnsweredOffers": True,
    }
    [lagged] = ok(pool.machine, publish, published, now=102)
    assert lagged.request.params == {"since": UNIX - 51, "waitMs": WAIT}
    # The lagged read re-delivers the same answer (nothing newer): settled.
    [exact] = ok(pool.machine, lagged, {"answers": [answer], "iceCandidates": {}}, now=103)
    assert exact.request.params == {"since": UNIX - 50, "waitMs": WAIT}


def test_candidates_in_a_poll_move_the_held_cursor_too() -> None:
    pool = Pool(WAIT)
    [poll] = pool.after_publish
    candidate = {"candidate": {"candidate": "x"}, "createdAt": UNIX - 10}
    [lagged] = ok(pool.machine, poll, {"answers": [], "iceCandidates": {"o": [candidate]}}, 50)
    [exact] = ok(pool.machine, lagged, {"answers": [], "iceCandidates": {"o": [candidate]}}, 51)
    assert exact.request.params["since"] == UNIX - 10


def test_a_far_future_row_never_makes_the_pool_spin() -> None:
    pool = Pool(WAIT)
    [poll] = pool.after_publish
    bogus = {"candidate": {"candidate": "x"}, "createdAt": UNIX + 10**9}
    reply = {"answers": [], "iceCandidates": {"o": [bogus]}}
    assert ok(pool.machine, poll, reply, now=10) == []  # early, nothing usable: wait
    assert pool.machine.get_timer() == 1010


def test_a_failed_held_poll_retries_at_the_interval() -> None:
    pool = Pool(WAIT)
    [poll] = pool.after_publish
    pool.machine.handle(
        RpcResult(
            now=9, call_id=poll.call_id, outcome=RpcFailed(error="x", transport=True), unix_ms=UNIX
        )
    )
    assert sends(pool.machine) == []
    assert pool.machine.get_timer() == 1009


def test_a_publish_due_while_a_poll_is_held_cancels_the_poll() -> None:
    pool = Pool(WAIT)
    [poll] = pool.after_publish
    [conn] = pool.machine.connections.values()
    assert conn.pc_id is not None
    # The offer's connection fails: its replacement must be published now, not after
    # the hold.
    pool.machine.handle(PeerConnectionStateChanged(now=10, pc_id=conn.pc_id, state="failed"))
    sends(pool.machine)
    [fresh] = [c for c in pool.machine.connections.values() if c.offer_id is None]
    assert fresh.pc_id is not None
    pool.machine.handle(LocalDescriptionReady(now=11, pc_id=fresh.pc_id, sdp=SDP, complete=True))
    cancel, publish = pool.machine.next_action(), pool.machine.next_action()
    assert cancel == CancelRpc(call_id=poll.call_id)  # first, so no result for it comes
    assert isinstance(publish, SendRpc)
    assert publish.request.method is Method.PUBLISH_SERVICE
    published = {"offers": [{"offerId": "cd" * 32, "sdp": SDP}], "keepsAnsweredOffers": True}
    [held] = ok(pool.machine, publish, published, now=12)
    assert held.request.params == {"since": 0, "waitMs": WAIT}  # the same cursor


def test_a_hold_never_outlasts_the_next_refresh() -> None:
    # ttl 40 s, margin 30 s: the refresh is due 10 s after the publish.
    pool = Pool(WAIT, ttl_ms=40_000)
    [poll] = pool.after_publish
    assert poll.request.params["waitMs"] == 10_000


@settings(max_examples=60, deadline=None)
@given(
    replies=st.lists(
        st.tuples(
            st.sampled_from(["empty", "bogus", "fail", "old"]),
            st.integers(0, 30_000),  # how long the reply took
        ),
        min_size=1,
        max_size=25,
    )
)
def test_the_pool_never_spins_on_replies_without_news(replies: list[tuple[str, int]]) -> None:
    """Whatever the replies, the held poll is re-issued at once only after a hold that
    ran half its course, or for news (one reply and one confirming read); anything else
    waits the plain interval."""
    # No looks at the service (they are not polls, and their own timer would be read
    # as the poll's here); test_core_recovery covers them with held polls.
    pool = Pool(WAIT, look_interval_ms=0)
    [call] = pool.after_publish
    now, sent_at = 2, 2
    early_at_once = 0
    for kind, took in replies:
        now = sent_at + took
        result: Any = {
            "empty": empty_poll(),
            "bogus": {"answers": [], "iceCandidates": {"o": [{"createdAt": UNIX * 2}]}},
            "old": {"answers": [], "iceCandidates": {"o": [{"createdAt": 1}]}},
        }.get(kind)
        if result is None:
            pool.machine.handle(
                RpcResult(now=now, call_id=call.call_id, outcome=RpcFailed(error="x"), unix_ms=UNIX)
            )
            out = sends(pool.machine)
        else:
            out = ok(pool.machine, call, result, now)
        if out:
            assert kind != "fail"
            if took < WAIT // 2:
                early_at_once += 1
            # "old" is news once (it moves the cursor): that reply and the lagged read
            # confirming it may go at once; nothing else may without a hold behind it.
            assert early_at_once <= 2
        else:
            deadline = pool.machine.get_timer()
            assert deadline is not None
            assert deadline >= now + 1000  # the plain interval, not a spin
            now = deadline
            out = pool.timer(now)
        [call] = out
        sent_at = now
        assert call.request.method is Method.POLL


def answerer(wait: int) -> tuple[Connection, SendRpc]:
    conn = Connection.answerer(
        validate_service_fqn("svc:1.0.0@alice"),
        config=ConnectionConfig(long_poll_wait_ms=wait),
        unit_random=lambda: 0.5,
    )
    conn.handle(Connect(now=0))
    [fetch] = sends(conn)
    assert fetch.request.method is Method.GET_SERVICE
    assert fetch.request.urgency is Urgency.URGENT
    return conn, fetch


def fetched(sdp: str) -> dict[str, Any]:
    return {"offerId": OFFER_ID, "sdp": sdp, "username": "alice", "serviceFqn": "svc:1.0.0@alice"}


def test_the_answerer_holds_get_ice_candidates_until_connected() -> None:
    conn, fetch = answerer(WAIT)
    [ice] = ok(conn, fetch, fetched(SDP), now=1)  # a trickling offerer: candidates follow
    assert ice.request.method is Method.GET_ICE_CANDIDATES
    assert ice.request.params["waitMs"] == WAIT
    assert ice.request.urgency is Urgency.HELD
    candidate = {"candidate": CANDIDATE, "createdAt": 7}
    [again] = ok(conn, ice, {"candidates": [candidate], "offerId": OFFER_ID}, now=2)
    assert again.request.params["since"] == 7  # strict: the server holds calls, so it is ours
    assert conn.pc_id is not None
    conn.handle(IceConnectionStateChanged(now=3, pc_id=conn.pc_id, state="connected"))
    cancels = []
    while (action := conn.next_action()) is not None:
        if isinstance(action, CancelRpc):
            cancels.append(action.call_id)
    assert cancels == [again.call_id]  # the held request is dropped, not left to time out
    assert conn.get_timer() is not None  # the connection timeout, no more polls
    conn.handle_timer(10_000)
    assert [c for c in sends(conn) if c.request.method is Method.GET_ICE_CANDIDATES] == []


def test_a_complete_offer_needs_no_candidate_polling_when_held() -> None:
    conn, fetch = answerer(WAIT)
    assert ok(conn, fetch, fetched(SDP_DONE), now=1) == []


def test_without_the_extension_the_answerer_polls_as_before() -> None:
    conn, fetch = answerer(0)
    [ice] = ok(conn, fetch, fetched(SDP_DONE), now=1)
    assert ice.request.params == {"serviceFqn": "svc:1.0.0@alice", "offerId": OFFER_ID, "since": 0}
    assert ok(conn, ice, {"candidates": [], "offerId": OFFER_ID}, now=2) == []
    conn.handle_timer(502)
    [again] = sends(conn)
    assert "waitMs" not in again.request.params


def test_gathering_complete_reads_end_of_candidates() -> None:
    assert gathering_complete(SDP_DONE)
    assert not gathering_complete(SDP)
    assert not gathering_complete("v=0\r\n")
    two = SDP_DONE + "m=audio 9 x\r\n"
    assert not gathering_complete(two)
    assert gathering_complete("v=0\r\na=end-of-candidates\r\n" + two)


@given(
    advertised=st.one_of(
        st.none(), st.integers(-5, 100_000), st.booleans(), st.text(max_size=3), st.floats()
    ),
    timeout_ms=st.integers(0, 120_000),
)
def test_the_wait_is_zero_or_within_every_bound(advertised: object, timeout_ms: int) -> None:
    body = {"version": "1", "extensions": {"longPoll": {"maxWaitMs": advertised}}}
    wait = long_poll_wait_ms(body, request_timeout_ms=timeout_ms)
    if wait:
        assert LONG_POLL_MIN_MS <= wait <= LONG_POLL_CAP_MS
        assert wait <= advertised_long_poll_ms(body)
        assert wait <= timeout_ms - LONG_POLL_TIMEOUT_MARGIN_MS


def test_a_server_without_extensions_means_plain_polling() -> None:
    assert long_poll_wait_ms({"version": "0.5.4"}, request_timeout_ms=30_000) == 0
    assert long_poll_wait_ms(None, request_timeout_ms=30_000) == 0
    assert long_poll_wait_ms({"extensions": []}, request_timeout_ms=30_000) == 0
    ours = {"extensions": {"longPoll": {"maxWaitMs": 60_000}}}
    assert long_poll_wait_ms(ours, request_timeout_ms=30_000) == LONG_POLL_CAP_MS
    assert long_poll_wait_ms(ours, request_timeout_ms=10_000) == 5_000
