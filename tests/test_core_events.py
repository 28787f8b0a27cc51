"""Events the harness scenarios never provoke, each provoked and asserted by name here:
``answer:duplicate``, ``datachannel:error``, ``ice:candidate:rejected``,
``ice:gathering:timeout`` and ``offers:publish:failed``.  The machines are driven by
hand, the test playing both the WebRTC driver and the server, on an integer clock.
"""

from __future__ import annotations

import random
from typing import Any

from rondevu_core.actions import Action, CreateOffer, CreatePeerConnection, SendRpc
from rondevu_core.config import ConnectionConfig, PoolConfig
from rondevu_core.connection import Connection, State
from rondevu_core.events import (
    AnswerDuplicate,
    AnswerProcessed,
    DataChannelError,
    Event,
    IceCandidateRejected,
    IceGatheringTimeout,
    PublishFailed,
)
from rondevu_core.inputs import (
    ChannelError,
    ChannelOpen,
    Connect,
    IceConnectionStateChanged,
    IceGatheringStateChanged,
    Input,
    LocalDescriptionReady,
    RemoteCandidateRejected,
    RemoteDescriptionSet,
    RpcResult,
    StartFilling,
)
from rondevu_core.pool import OfferPool
from rondevu_core.rpc import Method, RpcFailed, RpcOk, RpcOutcome
from tests.test_core_harness import SERVICE

T0 = 1_765_700_000_000
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 x\r\na=mid:0\r\n"
OFFER_ID = "ab" * 32


class Driver:
    """Feeds one machine and keeps what it produced."""

    def __init__(self, machine: Connection | OfferPool) -> None:
        self.machine = machine
        self.now = T0
        self.actions: list[Action] = []
        self.events: list[Event] = []

    def feed(self, event: Input) -> list[Action]:
        self.machine.handle(event)
        return self.drain()

    def drain(self) -> list[Action]:
        new: list[Action] = []
        while (action := self.machine.next_action()) is not None:
            new.append(action)
        while (event := self.machine.next_event()) is not None:
            self.events.append(event)
        self.actions.extend(new)
        return new

    def advance(self, ms: int) -> list[Action]:
        """Move the clock by ``ms``, firing every deadline on the way."""
        end = self.now + ms
        new: list[Action] = []
        while (at := self.machine.get_timer()) is not None and at <= end:
            self.now = max(self.now, at)
            self.machine.handle_timer(self.now)
            new.extend(self.drain())
        self.now = end
        return new

    def call(self, method: Method, actions: list[Action]) -> SendRpc:
        calls = [a for a in actions if isinstance(a, SendRpc) and a.request.method is method]
        assert len(calls) == 1, actions
        return calls[0]

    def reply(self, call: SendRpc, outcome: RpcOutcome) -> list[Action]:
        return self.feed(
            RpcResult(now=self.now, call_id=call.call_id, outcome=outcome, unix_ms=self.now)
        )

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e.name == name]


def pc_of(actions: list[Action]) -> int:
    (create,) = [a for a in actions if isinstance(a, CreatePeerConnection)]
    return create.pc_id


# -- offer pool ------------------------------------------------------------------------


def published_pool(config: ConnectionConfig | None = None) -> tuple[Driver, list[Action]]:
    """A one-offer pool whose offer is ready and whose publishService is in flight.

    The session layer is off by default here: the scripted replies echo `SDP` as it was
    fed, and the layer would annotate the published copy (tests/test_core_layer.py)."""
    pool = OfferPool(
        PoolConfig(
            service=SERVICE, max_offers=1, connection=config or ConnectionConfig(session=None)
        ),
        unit_random=random.Random(3).random,
    )
    d = Driver(pool)
    created = d.feed(StartFilling(now=d.now))
    assert any(isinstance(a, CreateOffer) for a in created)
    pc = pc_of(created)
    return d, d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=True))


def published(offer_id: str = OFFER_ID) -> RpcOk:
    return RpcOk(result={"offers": [{"offerId": offer_id, "sdp": SDP}]})


def answers(*items: tuple[str, int]) -> RpcOk:
    """A poll reply: ``(answererId, answeredAt)`` answers to `OFFER_ID`."""
    return RpcOk(
        result={
            "answers": [
                {"offerId": OFFER_ID, "answererId": who, "sdp": SDP, "answeredAt": at}
                for who, at in items
            ],
            "iceCandidates": {},
        }
    )


def test_publish_failure_is_reported_and_retried_with_backoff() -> None:
    d, actions = published_pool()
    first = d.call(Method.PUBLISH_SERVICE, actions)
    d.reply(first, RpcFailed(error="Rate limit exceeded"))
    (failed,) = d.named("offers:publish:failed")
    assert isinstance(failed, PublishFailed)
    assert failed.error == "Rate limit exceeded"
    # The retry waits for the backoff (base 1 s, ±10 %), then publishes the same offer.
    assert d.advance(800) == []
    retry = d.call(Method.PUBLISH_SERVICE, d.advance(1_000))
    assert retry.request.params["offers"] == first.request.params["offers"]
    d.reply(retry, published())
    assert [e.name for e in d.events][-2:] == ["offer:created", "offers:published"]
    assert len(d.named("offers:publish:failed")) == 1


def test_a_malformed_publish_reply_is_a_publish_failure_too() -> None:
    d, actions = published_pool()
    d.reply(d.call(Method.PUBLISH_SERVICE, actions), RpcOk(result={"offers": "nope"}))
    assert [e.name for e in d.events][-2:] == ["protocol:error", "offers:publish:failed"]


def test_second_answer_to_an_answered_offer_is_a_duplicate_and_is_not_applied() -> None:
    """S3: two answerers can both be told their answerOffer succeeded; the pool applies
    the first answer only and reports the other as ``answer:duplicate``."""
    d, actions = published_pool()
    d.reply(d.call(Method.PUBLISH_SERVICE, actions), published())
    poll = d.call(Method.POLL, d.advance(1_000))
    d.reply(poll, answers(("bob", T0 + 500)))
    assert [e.name for e in d.events].count("answer:processed") == 1
    applied = [e for e in d.events if isinstance(e, AnswerProcessed)]
    assert applied[0].answerer_id == "bob"
    # The same answer again (an overlapping cursor) is no duplicate: silently known.
    d.reply(d.call(Method.POLL, d.advance(1_000)), answers(("bob", T0 + 500)))
    assert d.named("answer:duplicate") == []
    # A different answer to the same offer is.
    late = d.reply(d.call(Method.POLL, d.advance(1_000)), answers(("carol", T0 + 900)))
    (duplicate,) = d.named("answer:duplicate")
    assert isinstance(duplicate, AnswerDuplicate)
    assert duplicate.offer_id == OFFER_ID
    assert duplicate.connection_id == applied[0].connection_id
    assert [e.name for e in d.events].count("answer:processed") == 1
    assert not any(type(a).__name__ == "SetRemoteDescription" for a in late)


# -- connection -------------------------------------------------------------------------


def answering(config: ConnectionConfig) -> tuple[Driver, int]:
    """An answerer whose offer was fetched: its peer connection ``pc`` exists."""
    d = Driver(Connection.answerer(SERVICE, config=config, unit_random=lambda: 0.5))
    fetch = d.call(Method.GET_SERVICE, d.feed(Connect(now=d.now)))
    offer: dict[str, Any] = {"offerId": OFFER_ID, "sdp": SDP, "username": "alice"}
    pc = pc_of(d.reply(fetch, RpcOk(result=offer)))
    d.feed(RemoteDescriptionSet(now=d.now, pc_id=pc))
    return d, pc


def test_gathering_that_never_completes_reports_a_timeout_once() -> None:
    config = ConnectionConfig(ice_gathering_timeout_ms=10_000)
    d, pc = answering(config)
    d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=False))
    d.feed(IceGatheringStateChanged(now=d.now, pc_id=pc, state="gathering"))
    d.advance(9_999)
    assert d.named("ice:gathering:timeout") == []
    d.advance(1)
    (timeout,) = d.named("ice:gathering:timeout")
    assert isinstance(timeout, IceGatheringTimeout)
    assert isinstance(d.machine, Connection)
    assert timeout.connection_id == d.machine.connection_id
    # Not fatal by itself: the attempt goes on until the connection timeout.
    assert d.machine.state is State.SIGNALING
    d.advance(10_000)
    assert len(d.named("ice:gathering:timeout")) == 1


def test_no_gathering_timeout_once_gathering_completes() -> None:
    for complete_in_sdp in (True, False):
        d, pc = answering(ConnectionConfig(ice_gathering_timeout_ms=10_000))
        d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=complete_in_sdp))
        if not complete_in_sdp:
            d.advance(5_000)
            d.feed(IceGatheringStateChanged(now=d.now, pc_id=pc, state="complete"))
        d.advance(20_000)
        assert d.named("ice:gathering:timeout") == []


def test_data_channel_error_is_reported_and_is_not_fatal() -> None:
    d, pc = answering(ConnectionConfig())
    d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=True))
    d.feed(IceConnectionStateChanged(now=d.now, pc_id=pc, state="connected"))
    d.feed(ChannelOpen(now=d.now, pc_id=pc))
    conn = d.machine
    assert isinstance(conn, Connection)
    assert conn.state is State.CONNECTED
    d.feed(ChannelError(now=d.now, pc_id=pc, error="SCTP: message too large"))
    (error,) = d.named("datachannel:error")
    assert isinstance(error, DataChannelError)
    assert error.error == "SCTP: message too large"
    assert conn.state is State.CONNECTED
    # A report about a peer connection that is not the current one is stale: no event.
    d.feed(ChannelError(now=d.now, pc_id=pc + 1000, error="stale"))
    assert len(d.named("datachannel:error")) == 1


def test_a_rejected_remote_candidate_is_reported_and_the_attempt_goes_on() -> None:
    """The driver only reports that the peer connection refused a candidate; the core
    decides it is not fatal, and says so with an event instead of losing it in a log."""
    d, pc = answering(ConnectionConfig())
    d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=True))
    conn = d.machine
    assert isinstance(conn, Connection)
    before = conn.state
    d.feed(RemoteCandidateRejected(now=d.now, pc_id=pc, reason="unparsable candidate"))
    (rejected,) = d.named("ice:candidate:rejected")
    assert isinstance(rejected, IceCandidateRejected)
    assert rejected.reason == "unparsable candidate"
    assert conn.state is before
    assert d.named("failed") == []
    d.feed(IceConnectionStateChanged(now=d.now, pc_id=pc, state="connected"))
    d.feed(ChannelOpen(now=d.now, pc_id=pc))
    assert conn.state is State.CONNECTED
    d.feed(RemoteCandidateRejected(now=d.now, pc_id=pc + 1000, reason="stale"))
    assert len(d.named("ice:candidate:rejected")) == 1
