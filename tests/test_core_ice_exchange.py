"""Unit and property tests of `IceExchange` alone (docs/protocol.md §9, B1-B6, B12, B20).

The exchange is driven through the machine contract only: the test plays the owning
connection (it forwards `LocalCandidate`, `LocalDescriptionReady`, `RemoteDescriptionSet`
and sends the commands `EnableUploads`, `StartPolling`, `StopPolling`, `EndExchange`)
and the server (it answers each `SendRpc` with an `RpcResult` holding a crafted
`RpcOutcome`, or with `FakeSignalingServer` for the B5 case).
Time is an integer the test advances; nothing sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from rondevu_core.actions import Action, AddRemoteCandidate, SendRpc
from rondevu_core.config import ConnectionConfig
from rondevu_core.events import Event
from rondevu_core.ice_exchange import (
    EnableUploads,
    EndExchange,
    IceExchange,
    ReuploadCandidates,
    StartPolling,
    StopPolling,
)
from rondevu_core.inputs import (
    LocalCandidate,
    LocalDescriptionReady,
    RemoteDescriptionSet,
    RpcResult,
)
from rondevu_core.outbox import Outbox
from rondevu_core.rpc import Method, RpcFailed, RpcOk, RpcOutcome, RpcRequest
from tests.fakes.signaling import FakeSignalingServer

FQN = "chat:1.0.0@alice"
PC = 2
OFFER = "o" * 16
T0 = 1_765_700_000_000


def cand(n: int) -> dict[str, Any]:
    return {
        "candidate": f"candidate:{n} 1 udp 2122260223 10.0.0.{n % 250 + 1} {5000 + n} typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }


def found(*items: tuple[int, int], **extra: Any) -> RpcOk:
    """A getIceCandidates reply: ``(candidate number, createdAt)`` pairs; ``extra`` is
    merged into every item (a ``role`` field, for instance)."""
    return RpcOk(
        result={
            "candidates": [{"candidate": cand(n), "createdAt": t, **extra} for n, t in items],
            "offerId": OFFER,
        }
    )


class Rig:
    """One exchange on its own outbox, with everything it produced kept in order."""

    def __init__(self, *, strict: bool = False, offer_id: str | None = None) -> None:
        self.config = ConnectionConfig(strict_ice_timestamps=strict)
        self.outbox = Outbox()
        self.exchange = IceExchange(
            outbox=self.outbox,
            config=self.config,
            connection_id=1,
            pc_id=2,
            service_fqn=FQN,
            offer_id=offer_id,
        )
        self.now = T0
        self.actions: list[Action] = []
        self.events: list[Event] = []

    def drain(self) -> list[Action]:
        """The actions queued since the last drain (also kept in ``actions``)."""
        new: list[Action] = []
        while (action := self.outbox.next_action()) is not None:
            new.append(action)
        while (event := self.outbox.next_event()) is not None:
            self.events.append(event)
        self.actions.extend(new)
        return new

    def rpcs(self, method: Method, actions: list[Action] | None = None) -> list[SendRpc]:
        return [
            a
            for a in (self.actions if actions is None else actions)
            if isinstance(a, SendRpc) and a.request.method is method
        ]

    def added(self) -> list[str]:
        return [a.candidate["candidate"] for a in self.actions if isinstance(a, AddRemoteCandidate)]

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def answer(self, call: SendRpc, outcome: RpcOutcome) -> list[Action]:
        self.exchange.handle(
            RpcResult(now=self.now, call_id=call.call_id, outcome=outcome, unix_ms=self.now)
        )
        return self.drain()

    def advance(self, ms: int) -> list[Action]:
        self.now += ms
        at = self.exchange.get_timer()
        if at is not None and at <= self.now:
            self.exchange.handle_timer(self.now)
        return self.drain()

    def only_poll(self, actions: list[Action]) -> SendRpc:
        polls = self.rpcs(Method.GET_ICE_CANDIDATES, actions)
        assert len(polls) == 1, actions
        return polls[0]


def uploaded(call: SendRpc) -> list[str]:
    return [c["candidate"] for c in call.request.params["candidates"]]


# -- local side ------------------------------------------------------------------------


def test_local_candidates_are_held_until_the_offer_id_is_known_then_sent_together() -> None:
    """B3: candidates trickled before the offer id exists are not lost, nor sent early."""
    rig = Rig()
    rig.exchange.handle(LocalCandidate(now=rig.now, pc_id=PC, candidate=cand(1)))
    rig.exchange.handle(LocalCandidate(now=rig.now, pc_id=PC, candidate=cand(2)))
    assert rig.drain() == []
    rig.exchange.handle(EnableUploads(offer_id=OFFER))
    (upload,) = rig.rpcs(Method.ADD_ICE_CANDIDATES, rig.drain())
    assert upload.request.params["offerId"] == OFFER
    assert upload.request.params["serviceFqn"] == FQN
    assert uploaded(upload) == [cand(1)["candidate"], cand(2)["candidate"]]


def test_one_upload_in_flight_and_every_candidate_uploaded_once() -> None:
    rig = Rig(offer_id=OFFER)
    rig.exchange.handle(EnableUploads(offer_id=OFFER))
    rig.exchange.handle(LocalCandidate(now=rig.now, pc_id=PC, candidate=cand(1)))
    (first,) = rig.drain()
    assert isinstance(first, SendRpc)
    rig.exchange.handle(LocalCandidate(now=rig.now, pc_id=PC, candidate=cand(2)))
    rig.exchange.handle(LocalCandidate(now=rig.now, pc_id=PC, candidate=cand(3)))
    rig.exchange.handle(
        LocalCandidate(now=rig.now, pc_id=PC, candidate=cand(1))
    )  # reported again: not uploaded again
    assert rig.drain() == []  # the first upload is still in flight
    (second,) = rig.answer(first, RpcOk(result={"count": 1, "offerId": OFFER}))
    assert isinstance(second, SendRpc)
    assert uploaded(second) == [cand(2)["candidate"], cand(3)["candidate"]]
    assert rig.answer(second, RpcOk(result={"count": 2, "offerId": OFFER})) == []
    everything = [c for call in rig.rpcs(Method.ADD_ICE_CANDIDATES) for c in uploaded(call)]
    assert sorted(everything) == sorted(cand(n)["candidate"] for n in (1, 2, 3))


def test_end_of_candidates_marker_is_never_uploaded() -> None:
    rig = Rig()
    rig.exchange.handle(EnableUploads(offer_id=OFFER))
    rig.exchange.handle(
        LocalCandidate(
            now=rig.now, pc_id=PC, candidate={"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}
        )
    )
    assert rig.drain() == []


def test_candidates_embedded_in_the_local_sdp_are_never_uploaded() -> None:
    """The offer's (or answer's) SDP already carries them; only new trickled ones go up."""
    rig = Rig()
    sdp = (
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n"
        f"a={cand(1)['candidate']}\r\na={cand(2)['candidate']}\r\n"
    )
    rig.exchange.handle(LocalDescriptionReady(now=rig.now, pc_id=PC, sdp=sdp, complete=True))
    for n in (1, 2, 3):
        rig.exchange.handle(LocalCandidate(now=rig.now, pc_id=PC, candidate=cand(n)))
    rig.exchange.handle(EnableUploads(offer_id=OFFER))
    (upload,) = rig.rpcs(Method.ADD_ICE_CANDIDATES, rig.drain())
    assert uploaded(upload) == [cand(3)["candidate"]]


def test_a_failed_upload_is_retried_only_after_a_transport_failure() -> None:
    rig = Rig()
    rig.exchange.handle(EnableUploads(offer_id=OFFER))
    rig.exchange.handle(StartPolling(now=rig.now))
    rig.exchange.handle(LocalCandidate(now=rig.now, pc_id=PC, candidate=cand(1)))
    actions = rig.drain()
    poll = rig.only_poll(actions)
    (upload,) = rig.rpcs(Method.ADD_ICE_CANDIDATES, actions)
    rig.answer(upload, RpcFailed(error="network down", transport=True))
    assert "signaling:error" in rig.names()
    rig.answer(poll, found())
    retry = rig.advance(rig.config.ice_polling_interval_ms)  # the next tick retries
    (again,) = rig.rpcs(Method.ADD_ICE_CANDIDATES, retry)
    assert uploaded(again) == [cand(1)["candidate"]]
    # A server refusal is final: the same request would be refused again.
    rig.answer(again, RpcFailed(error="Offer not found"))
    rig.answer(rig.only_poll(retry), found())
    assert rig.rpcs(Method.ADD_ICE_CANDIDATES, rig.advance(500)) == []


# -- remote side -------------------------------------------------------------------------


def test_polling_starts_as_soon_as_the_offer_id_is_known_with_since_zero() -> None:
    """B1 (no waiting for ICE checking) and B4 (no client clock in the cursor)."""
    rig = Rig()
    rig.exchange.handle(StartPolling(now=rig.now))  # offer id unknown: nothing to poll yet
    assert rig.drain() == []
    assert not rig.exchange.polling
    rig = Rig(offer_id=OFFER)
    rig.exchange.handle(StartPolling(now=rig.now))
    poll = rig.only_poll(rig.drain())
    assert poll.request.params == {"serviceFqn": FQN, "offerId": OFFER, "since": 0}
    assert rig.names() == ["ice:polling:started"]
    rig.exchange.handle(StartPolling(now=rig.now))  # idempotent
    assert rig.drain() == []


def test_no_role_filter_on_polled_candidates() -> None:
    """B2: items carry no role (or any role); the server already picked the other side's."""
    rig = Rig(offer_id=OFFER)
    rig.exchange.handle(RemoteDescriptionSet(now=rig.now, pc_id=PC))
    rig.exchange.handle(StartPolling(now=rig.now))
    poll = rig.only_poll(rig.drain())
    rig.answer(poll, found((1, 10), (2, 11)))
    rig.answer(rig.only_poll(rig.advance(500)), found((3, 12), role="answerer"))
    rig.answer(rig.only_poll(rig.advance(500)), found((4, 13), role="offerer"))
    assert rig.added() == [cand(n)["candidate"] for n in (1, 2, 3, 4)]
    assert rig.names().count("ice:candidate:remote") == 4


def test_remote_candidates_wait_for_the_remote_description() -> None:
    rig = Rig(offer_id=OFFER)
    rig.exchange.handle(StartPolling(now=rig.now))
    rig.answer(rig.only_poll(rig.drain()), found((1, 10), (2, 11)))
    assert rig.added() == []
    rig.exchange.handle(RemoteDescriptionSet(now=rig.now, pc_id=PC))
    rig.drain()
    assert rig.added() == [cand(1)["candidate"], cand(2)["candidate"]]


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "non-strict"])
def test_candidates_are_added_once_however_often_they_come_back(strict: bool) -> None:
    rig = Rig(strict=strict, offer_id=OFFER)
    rig.exchange.handle(RemoteDescriptionSet(now=rig.now, pc_id=PC))
    rig.exchange.handle(StartPolling(now=rig.now))
    rig.answer(rig.only_poll(rig.drain()), found((1, 10), (2, 11)))
    rig.answer(rig.only_poll(rig.advance(500)), found((1, 10), (2, 11), (3, 12), (3, 12)))
    assert rig.added() == [cand(n)["candidate"] for n in (1, 2, 3)]


def test_strict_cursor_advances_only_with_server_created_at_and_never_backwards() -> None:
    rig = Rig(strict=True, offer_id=OFFER)
    rig.now = T0 + 999_999  # a client clock far ahead of the server's: irrelevant (B4)
    rig.exchange.handle(StartPolling(now=rig.now))
    sinces: list[int] = []
    replies = [found((1, 100), (2, 105)), found((3, 103)), found(), found((4, 200))]
    for reply in replies:
        poll = rig.only_poll(rig.advance(500) if sinces else rig.drain())
        sinces.append(poll.request.params["since"])
        rig.answer(poll, reply)
    sinces.append(rig.only_poll(rig.advance(500)).request.params["since"])
    assert sinces == [0, 105, 105, 105, 200]
    assert rig.exchange.cursor == 200


def test_strict_cursor_ignores_a_created_at_far_in_the_future() -> None:
    """One bogus row (createdAt 2**53 - 1) would hide every candidate still to come."""
    rig = Rig(strict=True, offer_id=OFFER)
    rig.exchange.handle(RemoteDescriptionSet(now=rig.now, pc_id=PC))
    rig.exchange.handle(StartPolling(now=rig.now))
    rig.answer(rig.only_poll(rig.drain()), found((1, rig.now - 5), (2, 2**53 - 1)))
    poll = rig.only_poll(rig.advance(500))
    assert poll.request.params["since"] == rig.now - 500 - 5
    rig.answer(poll, found((3, rig.now - 1)))
    assert rig.added() == [cand(n)["candidate"] for n in (1, 2, 3)]


def test_non_strict_cursor_stays_at_zero() -> None:
    rig = Rig(strict=False, offer_id=OFFER)
    rig.exchange.handle(StartPolling(now=rig.now))
    rig.answer(rig.only_poll(rig.drain()), found((1, 100), (2, 105)))
    poll = rig.only_poll(rig.advance(500))
    assert poll.request.params["since"] == 0
    assert rig.exchange.cursor == 0


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "non-strict"])
def test_the_cursor_belongs_to_this_stream_alone(strict: bool) -> None:
    """B20: upload replies (which carry server data too) never move the ICE cursor, and
    two exchanges on one outbox (the pool's connections) keep separate cursors."""
    outbox = Outbox()
    config = ConnectionConfig(strict_ice_timestamps=strict)
    a, b = (
        IceExchange(outbox=outbox, config=config, connection_id=i, pc_id=10 + i, service_fqn=FQN)
        for i in (1, 2)
    )
    a.handle(EnableUploads(offer_id="a" * 16))
    b.handle(EnableUploads(offer_id="b" * 16))
    a.handle(StartPolling(now=T0))
    b.handle(StartPolling(now=T0))
    a.handle(LocalCandidate(now=T0, pc_id=PC, candidate=cand(9)))
    calls = {}
    while (action := outbox.next_action()) is not None:
        assert isinstance(action, SendRpc)
        calls[(action.request.params["offerId"][0], action.request.method)] = action.call_id
    upload_reply = RpcOk(result={"count": 1, "offerId": "a" * 16, "createdAt": 10**9})
    for exchange, call_id, outcome in (
        (a, calls[("a", Method.ADD_ICE_CANDIDATES)], upload_reply),
        (a, calls[("a", Method.GET_ICE_CANDIDATES)], found((1, 300))),
        (b, calls[("b", Method.GET_ICE_CANDIDATES)], found((1, 50))),
    ):
        exchange.handle(RpcResult(now=T0, call_id=call_id, outcome=outcome, unix_ms=T0))
    assert (a.cursor, b.cursor) == ((300, 50) if strict else (0, 0))


def test_one_poll_in_flight_and_the_next_one_only_after_the_reply() -> None:
    """B6: a slow reply never overlaps the next poll."""
    rig = Rig(offer_id=OFFER)
    rig.exchange.handle(StartPolling(now=rig.now))
    poll = rig.only_poll(rig.drain())
    for _ in range(5):  # the server is slow: intervals pass without a reply
        assert rig.advance(1000) == []
    rig.answer(poll, found())
    assert rig.advance(rig.config.ice_polling_interval_ms - 1) == []
    rig.only_poll(rig.advance(1))


def test_polling_stops_when_ice_connects_and_a_late_reply_is_ignored() -> None:
    """B12: `StopPolling` is what the connection sends on ICE connected/completed."""
    rig = Rig(offer_id=OFFER)
    rig.exchange.handle(RemoteDescriptionSet(now=rig.now, pc_id=PC))
    rig.exchange.handle(StartPolling(now=rig.now))
    poll = rig.only_poll(rig.drain())
    rig.exchange.handle(StopPolling())
    assert rig.drain() == []
    assert rig.names() == ["ice:polling:started", "ice:polling:stopped"]
    assert rig.exchange.owns(poll.call_id)  # expected, so accepted and dropped
    assert rig.answer(poll, found((1, 10))) == []
    assert not rig.exchange.owns(poll.call_id)
    assert rig.exchange.get_timer() is None
    assert rig.advance(60_000) == []


def test_polling_stops_after_the_polling_timeout() -> None:
    rig = Rig(offer_id=OFFER)
    rig.exchange.handle(StartPolling(now=rig.now))
    start = rig.now
    polls = 0
    while rig.exchange.polling:
        for poll in rig.rpcs(Method.GET_ICE_CANDIDATES, rig.drain()):
            polls += 1
            rig.answer(poll, found())
        rig.advance(100)
    assert rig.now - start >= rig.config.ice_polling_timeout_ms
    assert rig.now - start <= rig.config.ice_polling_timeout_ms + 100
    # Single-flight at 500 ms spacing: one poll per interval, plus the first.
    timeout, interval = rig.config.ice_polling_timeout_ms, rig.config.ice_polling_interval_ms
    assert polls <= timeout // interval + 1
    assert rig.names()[-1] == "ice:polling:stopped"
    assert rig.advance(60_000) == []


def test_offer_not_found_stops_polling() -> None:
    rig = Rig(offer_id=OFFER)
    rig.exchange.handle(StartPolling(now=rig.now))
    rig.answer(rig.only_poll(rig.drain()), RpcFailed(error="Offer not found"))
    assert not rig.exchange.polling
    assert rig.names()[-2:] == ["signaling:error", "ice:polling:stopped"]
    assert rig.advance(60_000) == []


def test_malformed_items_are_reported_and_skipped() -> None:
    rig = Rig(offer_id=OFFER)
    rig.exchange.handle(RemoteDescriptionSet(now=rig.now, pc_id=PC))
    rig.exchange.handle(StartPolling(now=rig.now))
    bad = RpcOk(
        result={
            "candidates": [
                {"candidate": cand(1), "createdAt": 5},
                {"candidate": {"candidate": 7}, "createdAt": 6},
                None,
            ]
        }
    )
    rig.answer(rig.only_poll(rig.drain()), bad)
    assert rig.added() == [cand(1)["candidate"]]
    assert "protocol:error" in rig.names()
    rig.only_poll(rig.advance(500))  # polling goes on


def test_nothing_happens_after_close() -> None:
    rig = Rig(offer_id=OFFER)
    rig.exchange.handle(EnableUploads(offer_id=OFFER))
    rig.exchange.handle(StartPolling(now=rig.now))
    rig.exchange.handle(LocalCandidate(now=rig.now, pc_id=PC, candidate=cand(1)))
    actions = rig.drain()
    rig.exchange.handle(EndExchange())
    rig.drain()
    rig.exchange.handle(LocalCandidate(now=rig.now, pc_id=PC, candidate=cand(2)))
    rig.exchange.handle(EnableUploads(offer_id=OFFER))
    rig.exchange.handle(ReuploadCandidates())
    rig.exchange.handle(StartPolling(now=rig.now))
    rig.exchange.handle(RemoteDescriptionSet(now=rig.now, pc_id=PC))
    for call in actions:
        assert isinstance(call, SendRpc)
        if rig.exchange.owns(call.call_id):
            rig.exchange.handle(
                RpcResult(now=rig.now, call_id=call.call_id, outcome=found((1, 1)), unix_ms=rig.now)
            )
    assert rig.drain() == []
    assert rig.exchange.get_timer() is None
    assert rig.advance(60_000) == []


# -- B5: colliding server timestamps -----------------------------------------------------


def serve(server: FakeSignalingServer, username: str, request: RpcRequest, now: int) -> Any:
    outcome = server.call(username, request, now)
    assert isinstance(outcome, RpcOk), outcome
    return outcome.result


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
def test_colliding_created_at_is_still_delivered_in_non_strict_mode(strict: bool) -> None:
    """B5 with the upstream (0.5.4) ``createdAt = request time + index`` rule: a later
    upload gets a createdAt equal to or below one already seen.  The non-strict exchange
    (the default) still delivers it; the strict cursor would skip it, which is why strict
    mode is only for servers that keep createdAt increasing."""
    server = FakeSignalingServer(mode="upstream")
    published = serve(
        server,
        "alice",
        RpcRequest(
            method=Method.PUBLISH_SERVICE,
            params={"serviceFqn": FQN, "offers": [{"sdp": "v=0\r\n"}], "ttl": 300_000},
        ),
        T0,
    )
    offer_id = published["offers"][0]["offerId"]

    def alice_uploads(now: int, *numbers: int) -> None:
        params = {"serviceFqn": FQN, "offerId": offer_id, "candidates": [cand(n) for n in numbers]}
        serve(server, "alice", RpcRequest(method=Method.ADD_ICE_CANDIDATES, params=params), now)

    rig = Rig(strict=strict, offer_id=offer_id)  # bob's exchange polls alice's candidates
    rig.exchange.handle(RemoteDescriptionSet(now=rig.now, pc_id=PC))
    rig.exchange.handle(StartPolling(now=rig.now))

    def poll_once() -> None:
        actions = rig.drain() if not rig.rpcs(Method.GET_ICE_CANDIDATES) else rig.advance(500)
        poll = rig.only_poll(actions)
        result = serve(server, "bob", poll.request, rig.now)
        rig.answer(poll, RpcOk(result=result))

    alice_uploads(T0 + 1000, 1, 2, 3)  # createdAt 1000, 1001, 1002 (relative)
    poll_once()
    alice_uploads(T0 + 1001, 4)  # createdAt 1001: collides with candidate 2
    alice_uploads(T0 + 999, 5)  # createdAt 999: below everything seen (a slower request)
    poll_once()
    delivered = set(rig.added())
    late = {cand(4)["candidate"], cand(5)["candidate"]}
    if strict:
        assert rig.exchange.cursor == T0 + 1002
        assert not late & delivered  # lost: the reason strict is off by default
    else:
        assert rig.exchange.cursor == 0
        assert late <= delivered
        assert len(rig.added()) == 5  # and each exactly once


# -- properties ------------------------------------------------------------------------


class ExchangeMachine(RuleBasedStateMachine):
    """One exchange fed arbitrary owner calls, local candidates, replies and time.

    Invariants: never two polls (nor two uploads) in flight; the cursor never decreases
    (and stays 0 when not strict); no remote candidate is added twice, nor before the
    remote description; no local candidate is uploaded twice within one publication;
    nothing at all after close.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rig = Rig(offer_id=None)
        self.seen_actions = 0
        self.seen_events = 0
        self.replies: list[SendRpc] = []  # calls issued and not answered yet
        self.live_poll: int | None = None  # the poll whose reply polling waits for
        self.live_upload: int | None = None
        self.cursor = 0
        self.added: list[str] = []
        self.uploaded_this_publication: list[str] = []
        self.remote_ready = False
        self.closed = False

    @initialize(strict=st.booleans(), offer_known=st.booleans(), remote_ready=st.booleans())
    def start(self, strict: bool, offer_known: bool, remote_ready: bool) -> None:
        # Most interesting runs need polling and a remote description; start there often
        # rather than hope the rules line up within a short run.
        self.rig = Rig(strict=strict, offer_id=None)
        if remote_ready:
            self.remote_description_set()
        if offer_known:
            self.offer_id_known()

    def step(self) -> None:
        """Account for everything the exchange produced since the last step."""
        self.rig.drain()
        for action in self.rig.actions[self.seen_actions :]:
            assert not self.closed, f"action after close: {action}"
            if isinstance(action, AddRemoteCandidate):
                assert self.remote_ready, "remote candidate before the remote description"
                self.added.append(action.candidate["candidate"])
            elif isinstance(action, SendRpc):
                self.replies.append(action)
                if action.request.method is Method.GET_ICE_CANDIDATES:
                    assert self.live_poll is None, "two polls in flight"
                    assert action.request.params["since"] == self.rig.exchange.cursor
                    self.live_poll = action.call_id
                else:
                    assert self.live_upload is None, "two uploads in flight"
                    self.live_upload = action.call_id
                    self.uploaded_this_publication.extend(uploaded(action))
        self.seen_actions = len(self.rig.actions)
        for event in self.rig.events[self.seen_events :]:
            if event.name == "ice:polling:stopped":
                self.live_poll = None  # its reply, if any, is abandoned
        self.seen_events = len(self.rig.events)

    @rule(n=st.integers(0, 12))
    def local_candidate(self, n: int) -> None:
        self.rig.exchange.handle(LocalCandidate(now=self.rig.now, pc_id=PC, candidate=cand(n)))
        self.step()

    @rule()
    def offer_id_known(self) -> None:
        self.rig.exchange.handle(EnableUploads(offer_id=OFFER))
        self.rig.exchange.handle(StartPolling(now=self.rig.now))
        self.step()

    @rule()
    def republished(self) -> None:
        self.rig.exchange.handle(ReuploadCandidates())
        self.uploaded_this_publication = []
        self.step()

    @rule()
    def remote_description_set(self) -> None:
        self.remote_ready = not self.closed
        self.rig.exchange.handle(RemoteDescriptionSet(now=self.rig.now, pc_id=PC))
        self.step()

    # Stopping and closing end most activity, so they fire on one draw in several: a
    # run then mostly explores a live exchange.
    @rule(draw=st.integers(0, 3))
    def ice_connected(self, draw: int) -> None:
        if draw == 3:  # not 0: hypothesis favours small values
            self.rig.exchange.handle(StopPolling())
        self.step()

    @rule(draw=st.integers(0, 9))
    def close(self, draw: int) -> None:
        if draw != 9:
            return
        self.rig.exchange.handle(EndExchange())
        self.step()
        self.closed = True
        self.live_upload = None

    @rule(
        pick=st.integers(0, 10),
        data=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 10_000)), max_size=5),
        how=st.sampled_from(["ok", "transport", "refused", "gone", "malformed"]),
    )
    def reply(self, pick: int, data: list[tuple[int, int]], how: str) -> None:
        if not self.replies:
            return
        call = self.replies.pop(pick % len(self.replies))
        if call.request.method is Method.GET_ICE_CANDIDATES:
            replies: dict[str, RpcOutcome] = {
                "ok": found(*data),
                "transport": RpcFailed(error="down", transport=True),
                "refused": RpcFailed(error="Rate limit exceeded"),
                "gone": RpcFailed(error="Offer not found"),
                "malformed": RpcOk(result={"candidates": "nope"}),
            }
            outcome = replies[how]
            if call.call_id == self.live_poll:
                self.live_poll = None
        else:
            outcome = RpcOk(result={"count": 1}) if how == "ok" else RpcFailed(error=how)
            if how == "transport":
                outcome = RpcFailed(error="down", transport=True)
                # Retried later: these candidates may go up again in this publication.
                for text in uploaded(call):
                    if text in self.uploaded_this_publication:
                        self.uploaded_this_publication.remove(text)
            if call.call_id == self.live_upload:
                self.live_upload = None
        if self.rig.exchange.owns(call.call_id):
            self.rig.exchange.handle(
                RpcResult(
                    now=self.rig.now, call_id=call.call_id, outcome=outcome, unix_ms=self.rig.now
                )
            )
        self.step()

    @rule(data=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 10_000)), max_size=4))
    def serve(self, data: list[tuple[int, int]]) -> None:
        """A healthy round: answer every outstanding call, then one polling interval."""
        while self.replies:
            self.reply(0, data, "ok")
        self.advance(self.rig.config.ice_polling_interval_ms)

    @rule(ms=st.sampled_from([500, 0, 200, 1000, 5000, 31_000]))
    def advance(self, ms: int) -> None:
        self.rig.advance(ms)
        self.step()

    @invariant()
    def cursor_monotonic(self) -> None:
        cursor = self.rig.exchange.cursor
        assert cursor >= self.cursor
        if not self.rig.config.strict_ice_timestamps:
            assert cursor == 0
        self.cursor = cursor

    @invariant()
    def each_remote_candidate_added_once(self) -> None:
        assert len(self.added) == len(set(self.added))

    @invariant()
    def each_local_candidate_uploaded_once_per_publication(self) -> None:
        texts = self.uploaded_this_publication
        assert len(texts) == len(set(texts))

    @invariant()
    def quiet_after_close(self) -> None:
        if self.closed:
            assert self.rig.exchange.get_timer() is None
            assert not self.rig.exchange.polling


TestExchangeMachine = ExchangeMachine.TestCase
TestExchangeMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
