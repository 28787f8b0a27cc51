"""The connection machine (`rondevu_core.connection`), driven by hand: the test plays
the WebRTC driver and the server on an integer clock.  Each of these failed before its
fix: the buffer on a final failure, answerOffer failures before and after the link is up,
timers after connecting or cancelled in the same round, and an application close that
lets sent messages leave.
"""

from __future__ import annotations

from typing import Any

from rondevu_core.actions import ClosePeerConnection
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
from rondevu_core.rpc import Method, RpcFailed
from tests.test_core_events import (
    SDP,
    Driver,
    answering,
)
from tests.test_core_harness import SERVICE


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
