"""Regressions found by a review of the pool, connection and session machines.

Each test drives one machine by hand (the test plays the WebRTC driver and the server on
an integer clock) and failed before its fix.
"""

from __future__ import annotations

from typing import Any

from rondevu_core.actions import ClosePeerConnection, SendRpc
from rondevu_core.config import ConnectionConfig
from rondevu_core.connection import Connection, State
from rondevu_core.events import Closed
from rondevu_core.inputs import (
    ChannelClosed,
    ChannelOpen,
    Close,
    Connect,
    IceConnectionStateChanged,
    LocalDescriptionReady,
    SendMessage,
)
from rondevu_core.rpc import Method, RpcFailed, RpcOk
from tests.test_core_events import (
    OFFER_ID,
    SDP,
    T0,
    Driver,
    answering,
    answers,
    published,
    published_pool,
)
from tests.test_core_harness import SERVICE

NO_ANSWERS = RpcOk(result={"answers": [], "iceCandidates": {}})


def run_pool(d: Driver, seconds: int, *, fail_publishes: int = 0) -> int:
    """Serve the pool for ``seconds``: empty polls, publishes failing ``fail_publishes``
    times and then succeeding.  Returns how many publishService calls were made."""
    publishes = 0
    for _ in range(seconds):
        for action in d.advance(1_000):
            if not isinstance(action, SendRpc):
                continue
            if action.request.method is Method.POLL:
                d.reply(action, NO_ANSWERS)
            elif action.request.method is Method.PUBLISH_SERVICE:
                publishes += 1
                if publishes <= fail_publishes:
                    d.reply(action, RpcFailed(error="Internal server error"))
                else:
                    d.reply(action, published())
    return publishes


def test_a_failed_refresh_is_retried_so_the_offers_do_not_expire() -> None:
    # ttl 300 s, refresh margin 30 s: the refresh is due 270 s after the first publish.
    d, actions = published_pool()
    d.reply(d.call(Method.PUBLISH_SERVICE, actions), published())
    assert run_pool(d, 269) == 0
    # The refresh fails once; the backoff retry (about 1 s later) must publish again.
    assert run_pool(d, 5, fail_publishes=1) == 2
    assert d.named("offers:publish:failed")
    assert len(d.named("offers:published")) == 2


def test_a_publish_reply_omitting_an_offer_is_retried_after_a_backoff_not_at_once() -> None:
    d, actions = published_pool()
    first = d.call(Method.PUBLISH_SERVICE, actions)
    # A misbehaving server stores nothing: no immediate republish (that would loop as fast
    # as the server answers and starve the poll), but a retry after the backoff.
    again = d.reply(first, RpcOk(result={"offers": []}))
    assert [a for a in again if isinstance(a, SendRpc)] == []
    names = [e.name for e in d.events]
    assert names[-3:] == ["protocol:error", "offers:published", "offers:publish:failed"]
    retry = d.call(Method.PUBLISH_SERVICE, d.advance(1_200))
    assert retry.request.params["offers"] == first.request.params["offers"]
    d.reply(retry, published())
    assert len(d.named("offer:created")) == 1


def test_preserve_buffer_on_close_hands_back_messages_after_a_final_failure() -> None:
    config = ConnectionConfig(preserve_buffer_on_close=True, reconnect_enabled=False)
    d = Driver(Connection.answerer(SERVICE, config=config, unit_random=lambda: 0.5))
    fetch = d.call(Method.GET_SERVICE, d.feed(Connect(now=d.now)))
    d.feed(SendMessage(now=d.now, data="hello"))
    d.reply(fetch, RpcFailed(error="Service not found"))
    assert isinstance(d.machine, Connection)
    assert d.machine.terminal
    assert d.machine.get_timer() is None
    d.feed(Close(now=d.now, reason="done"))
    (closed,) = [e for e in d.events if isinstance(e, Closed)]
    assert closed.unsent == ("hello",)


def test_without_preserve_buffer_on_close_a_final_failure_still_drops_the_buffer() -> None:
    config = ConnectionConfig(reconnect_enabled=False)
    d = Driver(Connection.answerer(SERVICE, config=config, unit_random=lambda: 0.5))
    fetch = d.call(Method.GET_SERVICE, d.feed(Connect(now=d.now)))
    d.feed(SendMessage(now=d.now, data="hello"))
    d.reply(fetch, RpcFailed(error="Service not found"))
    assert isinstance(d.machine, Connection)
    assert d.machine.buffered == 0


def test_a_late_answer_offer_failure_does_not_tear_down_an_established_link() -> None:
    """The answer reached the peer (the link is up) but the reply was lost: the link stays."""
    d, pc = answering(ConnectionConfig())
    answer = d.call(
        Method.ANSWER_OFFER,
        d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=True)),
    )
    d.feed(IceConnectionStateChanged(now=d.now, pc_id=pc, state="connected"))
    d.feed(ChannelOpen(now=d.now, pc_id=pc))
    assert isinstance(d.machine, Connection)
    assert d.machine.state is State.CONNECTED
    after = d.reply(answer, RpcFailed(error="timed out", transport=True))
    assert d.machine.state is State.CONNECTED
    assert d.machine.pc_id == pc
    assert after == []
    (error,) = d.named("signaling:error")
    assert error.name == "signaling:error"
    assert d.named("failed") == []


def test_an_answer_offer_failure_before_the_link_is_up_still_fails_the_attempt() -> None:
    d, pc = answering(ConnectionConfig())
    answer = d.call(
        Method.ANSWER_OFFER,
        d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=True)),
    )
    d.reply(answer, RpcFailed(error="Offer already answered"))
    assert isinstance(d.machine, Connection)
    assert d.machine.state is State.RECONNECTING
    assert len(d.named("failed")) == 1


def test_no_gathering_timeout_after_connecting() -> None:
    # A stack that never reports gathering "complete" (some browsers keep gathering).
    d, pc = answering(ConnectionConfig(ice_gathering_timeout_ms=10_000))
    d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=False))
    d.feed(IceConnectionStateChanged(now=d.now, pc_id=pc, state="connected"))
    d.feed(ChannelOpen(now=d.now, pc_id=pc))
    assert isinstance(d.machine, Connection)
    assert d.machine.state is State.CONNECTED
    d.advance(20_000)
    assert d.named("ice:gathering:timeout") == []


def test_a_timer_cancelled_by_an_earlier_one_in_the_same_round_does_not_fire() -> None:
    # The connection timeout and the gathering timeout fall due together: the failure
    # tears the attempt down (cancelling the gathering timer), so no stray
    # ice:gathering:timeout is reported for the attempt that follows.
    config = ConnectionConfig(connection_timeout_ms=10_000, ice_gathering_timeout_ms=10_000)
    d, pc = answering(config)
    d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=False))
    d.advance(10_000)
    assert len(d.named("connection:timeout")) == 1
    assert d.named("ice:gathering:timeout") == []


def test_a_duplicate_answer_is_reported_once_not_on_every_poll() -> None:
    # The answers cursor lags 1 ms, so a server that overwrote the applied answer hands
    # the different one back on every poll.
    d, actions = published_pool()
    d.reply(d.call(Method.PUBLISH_SERVICE, actions), published())
    d.reply(d.call(Method.POLL, d.advance(1_000)), answers(("bob", T0 + 500)))
    for _ in range(5):
        d.reply(d.call(Method.POLL, d.advance(1_000)), answers(("carol", T0 + 900)))
    assert len(d.named("answer:duplicate")) == 1


def _poll_reply(*items: tuple[str, str, int]) -> RpcOk:
    """A poll reply of ``(offerId, answererId, answeredAt)`` answers."""
    rows = [{"offerId": o, "answererId": who, "sdp": SDP, "answeredAt": at} for o, who, at in items]
    return RpcOk(result={"answers": rows, "iceCandidates": {}})


def test_a_bogus_far_future_answer_does_not_hide_later_answers() -> None:
    # One row from a glitching server (another offer, answeredAt 2**53 - 1) moved the
    # cursor past every real answer: the pool polled on and never saw bob's.
    d, actions = published_pool()
    d.reply(d.call(Method.PUBLISH_SERVICE, actions), published())
    poll = d.call(Method.POLL, d.advance(1_000))
    d.reply(poll, _poll_reply(("f" * 64, "mallory", 2**53 - 1)))
    poll = d.call(Method.POLL, d.advance(1_000))
    assert poll.request.params["since"] < d.now
    d.reply(poll, _poll_reply((OFFER_ID, "mallory", 2**53 - 1)))  # even for our own offer
    poll = d.call(Method.POLL, d.advance(1_000))
    assert poll.request.params["since"] < d.now
    d.reply(poll, answers(("bob", d.now - 10)))
    poll = d.call(Method.POLL, d.advance(1_000))
    assert poll.request.params["since"] == d.now - 1_000 - 11


def _connected_answerer(config: ConnectionConfig) -> tuple[Driver, int]:
    d, pc = answering(config)
    d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=True))
    d.feed(IceConnectionStateChanged(now=d.now, pc_id=pc, state="connected"))
    d.feed(ChannelOpen(now=d.now, pc_id=pc))
    assert isinstance(d.machine, Connection)
    assert d.machine.state is State.CONNECTED
    return d, pc


def _closes(actions: list[Any]) -> list[ClosePeerConnection]:
    return [a for a in actions if isinstance(a, ClosePeerConnection)]


def test_an_application_close_of_an_open_channel_lets_sent_messages_leave() -> None:
    # WebRTC's close aborts the association: without a linger, send() then close()
    # lost every message still on its way (5 of 5 runs over loopback).
    d, pc = _connected_answerer(ConnectionConfig(close_linger_ms=1500))
    d.feed(SendMessage(now=d.now, data="bye"))
    (close,) = _closes(d.feed(Close(now=d.now)))
    assert (close.pc_id, close.linger_ms) == (pc, 1500)


def test_only_an_application_close_of_an_open_channel_lingers() -> None:
    # Before the channel opened nothing can be on its way out.
    d, _ = answering(ConnectionConfig(close_linger_ms=1500))
    (close,) = _closes(d.feed(Close(now=d.now)))
    assert close.linger_ms == 0
    # A lost link is torn down at once (the peer is gone, nothing would leave).
    d, pc = _connected_answerer(ConnectionConfig(close_linger_ms=1500))
    (close,) = _closes(d.feed(ChannelClosed(now=d.now, pc_id=pc)))
    assert close.linger_ms == 0
