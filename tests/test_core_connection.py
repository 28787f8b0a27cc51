"""The connection machine (`rondevu_core.connection`), driven by hand: the test plays
the WebRTC driver and the server on an integer clock.  Each of these failed before its
fix: the buffer on a final failure, answerOffer failures before and after the link is up,
timers after connecting or cancelled in the same round, and an application close that
lets sent messages leave.
"""

from __future__ import annotations

from typing import Any

from rondevu_core.actions import ClosePeerConnection, SendData
from rondevu_core.config import ConnectionConfig
from rondevu_core.connection import Connection, State
from rondevu_core.events import Closed, Message
from rondevu_core.inputs import (
    ChannelAnnounced,
    ChannelClosed,
    ChannelMessage,
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


def state_of(d: Driver) -> State:
    """The connection's state, read through a call so mypy does not narrow it."""
    assert isinstance(d.machine, Connection)
    return d.machine.state


def test_the_answerer_speaks_on_the_first_channel_the_peer_announced_only() -> None:
    """Which data channel is ours is the core's choice, not the driver's: the answerer
    takes the first channel the remote peer announces; reports about another channel
    (a peer opening one of its own) change nothing, and sends name our channel."""
    d, pc = answering(ConnectionConfig(session=None))
    d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=True))
    d.feed(ChannelAnnounced(now=d.now, pc_id=pc, channel=7, label="rondevu", local=False))
    d.feed(ChannelAnnounced(now=d.now, pc_id=pc, channel=8, label="theirs", local=False))
    d.feed(IceConnectionStateChanged(now=d.now, pc_id=pc, state="connected"))
    d.feed(ChannelOpen(now=d.now, pc_id=pc, channel=8))
    assert state_of(d) is not State.CONNECTED  # not our channel
    d.feed(ChannelOpen(now=d.now, pc_id=pc, channel=7))
    assert state_of(d) is State.CONNECTED
    d.feed(ChannelMessage(now=d.now, pc_id=pc, channel=8, data="not for us"))
    d.feed(ChannelMessage(now=d.now, pc_id=pc, channel=7, data="for us"))
    assert [e.data for e in d.events if isinstance(e, Message)] == ["for us"]
    d.feed(ChannelClosed(now=d.now, pc_id=pc, channel=8))
    assert state_of(d) is State.CONNECTED
    sent = d.feed(SendMessage(now=d.now, data="reply"))
    assert [(a.channel, a.data) for a in sent if isinstance(a, SendData)] == [(7, "reply")]
    assert d.named("protocol:error") == []


def test_an_announcement_from_the_wrong_side_does_not_choose_the_channel() -> None:
    """The answerer's channel comes from the offerer: a channel it created itself (a
    driver announcing ``local`` channels) is not the connection's."""
    d, pc = answering(ConnectionConfig(session=None))
    d.feed(LocalDescriptionReady(now=d.now, pc_id=pc, sdp=SDP, complete=True))
    d.feed(ChannelAnnounced(now=d.now, pc_id=pc, channel=0, label="mine", local=True))
    d.feed(ChannelAnnounced(now=d.now, pc_id=pc, channel=1, label="rondevu", local=False))
    d.feed(IceConnectionStateChanged(now=d.now, pc_id=pc, state="connected"))
    d.feed(ChannelOpen(now=d.now, pc_id=pc, channel=0))
    assert state_of(d) is not State.CONNECTED
    d.feed(ChannelOpen(now=d.now, pc_id=pc, channel=1))
    assert state_of(d) is State.CONNECTED
