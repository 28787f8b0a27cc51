"""The aiortc peer driver with real aiortc peers on 127.0.0.1 (no mocks).

Two `AiortcPeer`s exchange SDP in memory.  Every peer here is built with no ICE servers
and ``host_addresses=["127.0.0.1"]``, so all WebRTC traffic stays on loopback; the tests
check that on the candidates themselves.  Waits are on events, bounded by timeouts.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import aioice.ice
import anyio
import pytest
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from rondevu_aiortc import AiortcPeer, PeerClosedError, PeerStateError, rtc_configuration
from rondevu_aiortc._hosts import check_host_candidates
from rondevu_core.inputs import (
    ChannelAnnounced,
    ChannelClosed,
    ChannelError,
    ChannelMessage,
    ChannelOpen,
    IceGatheringStateChanged,
    LocalDescriptionReady,
    PeerConnectionStateChanged,
    PeerError,
    PeerInput,
    RemoteCandidateRejected,
    RemoteDescriptionSet,
)
from rondevu_core.rules.ice import (
    ICE_PRESETS,
    NO_ICE_SERVERS,
    IceConfiguration,
    IceServer,
    IceTransportPolicy,
    ice_configuration,
)
from rondevu_core.rules.sdp import candidates_from_sdp, strip_candidates

LOOPBACK = ["127.0.0.1"]
TIMEOUT = 10.0
E = TypeVar("E", bound=PeerInput)


class Recorder:
    """An ``on_input`` callback that keeps every report and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[PeerInput] = []
        self._changed = asyncio.Event()

    def __call__(self, event: PeerInput) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait(self, kind: type[E], match: Callable[[E], bool] = lambda _: True) -> E:
        """The first recorded event of ``kind`` that ``match``es, waiting if needed."""
        with anyio.fail_after(TIMEOUT):
            while True:
                found = [e for e in self.of(kind) if match(e)]
                if found:
                    return found[0]
                self._changed.clear()
                await self._changed.wait()


def loopback_peer(recorder: Recorder) -> AiortcPeer:
    return AiortcPeer(ice=NO_ICE_SERVERS, on_input=recorder, host_addresses=LOOPBACK)


async def connect(
    offerer: AiortcPeer,
    answerer: AiortcPeer,
    *,
    trickle: bool = False,
) -> None:
    """The in-memory signaling: offer, answer, and (with ``trickle``) candidates apart."""
    offer = await offerer.create_offer()
    if trickle:
        # The two-step form the core drives: SetRemoteDescription, then CreateAnswer.
        assert await answerer.set_remote_offer(strip_candidates(offer))
        answer: str | None = await answerer.create_answer()
    else:
        answer = await answerer.accept_offer(offer)
    assert answer is not None
    assert await offerer.set_remote_answer(strip_candidates(answer) if trickle else answer)
    if trickle:
        # Through JSON, as the candidates would travel via the server (§9).
        for source, sink in ((offerer, answerer), (answerer, offerer)):
            for wire in source.local_candidates():
                assert await sink.add_remote_candidate(json.loads(json.dumps(wire.to_json())))
            assert await sink.add_remote_candidate(None)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[AiortcPeer, Recorder, AiortcPeer, Recorder]]:
    a_events, b_events = Recorder(), Recorder()
    async with loopback_peer(a_events) as a, loopback_peer(b_events) as b:
        yield a, a_events, b, b_events


Pair = tuple[AiortcPeer, Recorder, AiortcPeer, Recorder]


@pytest.mark.anyio
async def test_data_channel_opens_and_carries_str_and_bytes(pair: Pair) -> None:
    a, a_events, b, b_events = pair
    info = a.create_data_channel("default")
    assert (info.channel, info.label, info.ordered, info.local) == (0, "default", True, True)
    await connect(a, b)

    assert a_events.of(ChannelAnnounced) == [info]  # a local channel is reported too
    await a_events.wait(ChannelOpen)
    announced = await b_events.wait(ChannelAnnounced)
    assert (announced.label, announced.local) == ("default", False)
    await b_events.wait(ChannelOpen, lambda e: e.channel == announced.channel)

    sent: list[str | bytes] = ["hello", b"\x00\xffbinary", "", b"", "1", b"1", "ünï"]
    for data in sent:
        a.send(0, data)
        b.send(announced.channel, data)
    for events in (a_events, b_events):
        await events.wait(ChannelMessage, lambda e: e.data == "ünï")
        received = [e.data for e in events.of(ChannelMessage)]
        assert received == sent
        assert [type(d) for d in received] == [type(d) for d in sent]

    await a_events.wait(PeerConnectionStateChanged, lambda e: e.state == "connected")
    await b_events.wait(PeerConnectionStateChanged, lambda e: e.state == "connected")
    for events in (a_events, b_events):
        assert [e.state for e in events.of(IceGatheringStateChanged)] == ["gathering", "complete"]
    for events in (a_events, b_events):
        (ready,) = events.of(LocalDescriptionReady)
        assert ready.complete  # aiortc's SDP holds every candidate
        assert ready.pc_id == 0  # the default; the runtime passes the core's pc id
    assert len(b_events.of(RemoteDescriptionSet)) == 1
    assert len(a_events.of(RemoteDescriptionSet)) == 1


@pytest.mark.anyio
async def test_reports_are_core_inputs_stamped_with_the_peer_id_and_clock() -> None:
    """The driver speaks the core's vocabulary: each report carries the ``pc_id`` it was
    given and ``now`` from the injected clock, so a runtime feeds it on unchanged."""
    a_events, b_events = Recorder(), Recorder()
    ticks = iter(range(1000, 100_000))
    a = AiortcPeer(
        ice=NO_ICE_SERVERS,
        on_input=a_events,
        pc_id=41,
        clock=lambda: next(ticks),
        host_addresses=LOOPBACK,
    )
    b = AiortcPeer(ice=NO_ICE_SERVERS, on_input=b_events, pc_id=42, host_addresses=LOOPBACK)
    async with a, b:
        a.create_data_channel("default")
        await connect(a, b)
        await a_events.wait(ChannelOpen)
        await b_events.wait(ChannelOpen)
    assert {e.pc_id for e in a_events.events} == {41}
    assert {e.pc_id for e in b_events.events} == {42}
    stamps = [e.now for e in a_events.events]
    assert stamps == sorted(stamps)
    assert stamps[0] >= 1000


@pytest.mark.anyio
async def test_every_candidate_is_loopback(pair: Pair) -> None:
    a, a_events, b, _ = pair
    a.create_data_channel("default")
    assert a.local_candidates() == ()
    await connect(a, b)
    for peer in (a, b):
        sdp = peer.local_description
        assert sdp is not None
        wires = candidates_from_sdp(sdp)
        assert wires, "aiortc embeds its candidates in the SDP"
        assert peer.local_candidates() == wires
        assert {(w.sdp_mid, w.sdp_mline_index) for w in wires} == {("0", 0)}
        assert {w.parsed().address for w in wires} == {"127.0.0.1"}
        assert {w.parsed().type for w in wires} == {"host"}
    ready = await a_events.wait(LocalDescriptionReady)
    assert ready.sdp == a.local_description


@pytest.mark.anyio
async def test_trickled_candidates_are_the_only_route(pair: Pair) -> None:
    # Both SDPs are stripped, so each side learns the other's address only through
    # add_remote_candidate.
    a, a_events, b, b_events = pair
    a.create_data_channel("default")
    await connect(a, b, trickle=True)
    await a_events.wait(ChannelOpen)
    announced = await b_events.wait(ChannelAnnounced)
    b.send(announced.channel, "over trickle")
    assert (await a_events.wait(ChannelMessage)).data == "over trickle"


@pytest.mark.anyio
async def test_channel_options_are_reported_on_both_sides(pair: Pair) -> None:
    a, _, b, b_events = pair
    lossy = a.create_data_channel("lossy", ordered=False, max_retransmits=0)
    timed = a.create_data_channel("timed", max_packet_life_time=500, protocol="chat")
    assert (lossy.ordered, lossy.max_retransmits, lossy.max_packet_life_time) == (False, 0, None)
    assert (timed.ordered, timed.max_retransmits, timed.max_packet_life_time) == (True, None, 500)
    assert (lossy.channel, timed.channel, timed.protocol) == (0, 1, "chat")
    await connect(a, b)
    await b_events.wait(ChannelOpen, lambda e: e.channel == 1)  # both announced
    remote = {e.label: e for e in b_events.of(ChannelAnnounced) if not e.local}
    assert (remote["lossy"].ordered, remote["lossy"].max_retransmits) == (False, 0)
    assert remote["lossy"].max_packet_life_time is None
    assert (remote["timed"].ordered, remote["timed"].max_packet_life_time) == (True, 500)
    assert (remote["timed"].max_retransmits, remote["timed"].protocol) == (None, "chat")


@pytest.mark.anyio
async def test_close_is_idempotent_and_leaves_no_task() -> None:
    before = asyncio.all_tasks()
    a_events, b_events = Recorder(), Recorder()
    a, b = loopback_peer(a_events), loopback_peer(b_events)
    a.create_data_channel("default")
    await connect(a, b)
    await a_events.wait(ChannelOpen)
    await b_events.wait(ChannelOpen)

    await a.close()
    await a.close()
    assert a.closed
    assert a.connection_state == "closed"
    await a_events.wait(ChannelClosed)
    await a_events.wait(PeerConnectionStateChanged, lambda e: e.state == "closed")
    # The remote side hears of a clean close at once (DTLS close_notify), not after 30 s.
    await b_events.wait(ChannelClosed)
    await b_events.wait(PeerConnectionStateChanged, lambda e: e.state == "closed")
    await asyncio.gather(b.close(), b.close())

    assert asyncio.all_tasks() - before == set()
    with pytest.raises(PeerClosedError):
        await a.create_offer()
    with pytest.raises(PeerClosedError):
        a.send(0, "late")
    with pytest.raises(PeerClosedError):
        a.create_data_channel("late")


@pytest.mark.anyio
async def test_remote_misbehaviour_is_reported_not_raised(pair: Pair) -> None:
    a, a_events, b, b_events = pair
    a.create_data_channel("default")
    offer = await a.create_offer()
    bad_offers = [
        offer.replace("a=ice-ufrag:", "a=x-ufrag:"),  # aiortc: ValueError
        "v=0\r\nm=application notaport UDP/DTLS/SCTP webrtc-datachannel\r\n",  # assert
        offer.replace("a=setup:actpass", "a=setup:bogus"),  # KeyError
    ]
    for bad in bad_offers:
        assert await b.accept_offer(bad) is None
    rejected = b_events.of(PeerError)
    assert [e.operation for e in rejected] == ["remote offer"] * len(bad_offers)
    assert rejected[0].error == "ValueError: ICE username fragment or password is missing"
    assert b_events.of(LocalDescriptionReady) == []

    # The rejected offers left b able to take the real one.
    assert await b.accept_offer(offer) is not None
    assert not await a.set_remote_answer("garbage")
    assert (await a_events.wait(PeerError)).operation == "remote answer"

    good = a.local_candidates()[0].to_json()
    bad_candidates: list[dict[str, object]] = [
        {"candidate": "candidate:nonsense", "sdpMid": "0"},
        {"candidate": good["candidate"]},
        {**good, "sdpMid": "7"},
        {**good, "candidate": str(good["candidate"]).replace("127.0.0.1", "evil.example")},
        {**good, "candidate": str(good["candidate"]).replace("127.0.0.1", "peer.local")},
    ]
    for candidate in bad_candidates:
        assert not await b.add_remote_candidate(candidate)
    reasons = [e.reason for e in b_events.of(RemoteCandidateRejected)]
    assert len(reasons) == len(bad_candidates)
    assert "unknown sdpMid" in reasons[2]
    assert "not an IP" in reasons[3]
    assert "mDNS name while host_addresses is set" in reasons[4]
    assert await b.add_remote_candidate(good)


@pytest.mark.anyio
async def test_local_misuse_raises(pair: Pair) -> None:
    a, _, b, _ = pair
    with pytest.raises(PeerStateError, match="remote description first"):
        await b.add_remote_candidate({"candidate": "", "sdpMid": "0"})
    with pytest.raises(PeerStateError):
        await a.set_remote_answer("v=0\r\n")  # no local offer pending
    with pytest.raises(PeerStateError, match="no data channel 3"):
        a.send(3, "x")
    channel = a.create_data_channel("default").channel
    with pytest.raises(PeerStateError, match="connecting, not open"):
        a.send(channel, "x")
    with pytest.raises(TypeError):
        a.send(channel, bytearray(b"x"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most one"):
        a.create_data_channel("x", max_retransmits=1, max_packet_life_time=1)


@pytest.mark.anyio
async def test_callback_failure_becomes_a_channel_error() -> None:
    failing, b_events = Recorder(), Recorder()

    def on_input(event: PeerInput) -> None:
        failing(event)
        if isinstance(event, ChannelMessage) and event.data == "boom":
            raise RuntimeError("handler bug")

    a = AiortcPeer(ice=NO_ICE_SERVERS, on_input=on_input, host_addresses=LOOPBACK)
    async with a, loopback_peer(b_events) as b:
        a.create_data_channel("default")
        await connect(a, b)
        announced = await b_events.wait(ChannelAnnounced)
        await failing.wait(ChannelOpen)
        b.send(announced.channel, "boom")
        error = await failing.wait(ChannelError)
        assert (error.channel, error.error) == (0, "RuntimeError: handler bug")


def test_option_validation() -> None:
    relay = IceConfiguration(
        servers=(
            IceServer(urls=("turn:127.0.0.1:9?transport=tcp",), username="u", credential="p"),
        ),
        transport_policy=IceTransportPolicy.RELAY,
    )
    with pytest.raises(ValueError, match="relay transport policy"):
        AiortcPeer(ice=relay, on_input=Recorder(), host_addresses=LOOPBACK)
    with pytest.raises(ValueError, match="not a string"):
        AiortcPeer(ice=NO_ICE_SERVERS, on_input=Recorder(), host_addresses="127.0.0.1")
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        AiortcPeer(ice=NO_ICE_SERVERS, on_input=Recorder(), host_addresses=["localhost"])
    with pytest.raises(ValueError, match="empty"):
        AiortcPeer(ice=NO_ICE_SERVERS, on_input=Recorder(), host_addresses=[])


def test_configuration_conversion() -> None:
    # An explicit empty list: None would make aiortc add Google's STUN server silently.
    assert rtc_configuration(NO_ICE_SERVERS).iceServers == []
    for name in ("ipv4-turn", "hostname-turns", "google-stun"):
        config = rtc_configuration(ICE_PRESETS[name])
        assert config.iceTransportPolicy is RTCIceTransportPolicy.ALL
        assert [s.urls for s in config.iceServers or []] == [
            list(s.urls) for s in ICE_PRESETS[name].servers
        ]
    relay = rtc_configuration(ICE_PRESETS["relay-only"])
    assert relay.iceTransportPolicy is RTCIceTransportPolicy.RELAY  # B17, really relay-only
    assert [s.username for s in relay.iceServers or []] == [None, "webrtcuser"]
    unusable = ice_configuration(
        [{"urls": "turns:x:5349?transport=udp", "username": "u", "credential": "p"}],
        transport_policy=IceTransportPolicy.RELAY,
    )
    with pytest.raises(ValueError, match="TURN URL aiortc can use"):
        rtc_configuration(unusable)
    with pytest.raises(ValueError, match="malformed uri"):
        rtc_configuration(ice_configuration([{"urls": "stun:"}]))


@pytest.mark.anyio
async def test_relay_policy_gathers_no_direct_candidates() -> None:
    # A TURN "server" on 127.0.0.1 whose port refuses connections (bound, not listening):
    # with the relay policy aioice must not gather a single host candidate, so the offer
    # holds none (and no socket is opened on any other address).
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        port = refusing.getsockname()[1]
        relay = IceConfiguration(
            servers=(
                IceServer(
                    urls=(f"turn:127.0.0.1:{port}?transport=tcp",),
                    username="u",
                    credential="p",
                ),
            ),
            transport_policy=IceTransportPolicy.RELAY,
        )
        events = Recorder()
        async with AiortcPeer(ice=relay, on_input=events) as peer:
            peer.create_data_channel("default")
            sdp = await peer.create_offer()
        assert candidates_from_sdp(sdp) == ()
        assert [e.state for e in events.of(IceGatheringStateChanged)][:2] == [
            "gathering",
            "complete",
        ]


@pytest.mark.anyio
async def test_host_restriction_stays_with_its_peer() -> None:
    # Restricting one peer changes nothing global: aioice's address discovery is the
    # original function, and a peer without host_addresses keeps aioice's own gathering.
    # (The unrestricted peer never gathers, so it opens no socket off loopback.)
    original = aioice.ice.get_host_addresses
    async with (
        loopback_peer(Recorder()) as restricted,
        AiortcPeer(ice=NO_ICE_SERVERS, on_input=Recorder()) as plain,
    ):
        restricted.create_data_channel("default")
        plain.create_data_channel("default")
        await restricted.create_offer()
        assert aioice.ice.get_host_addresses is original
        for peer, patched in ((restricted, True), (plain, False)):
            sctp = peer._pc.sctp
            assert sctp is not None
            connection = sctp.transport.transport.iceGatherer._connection
            assert ("gather_candidates" in vars(connection)) is patched


def test_host_candidate_check_refuses_other_addresses() -> None:
    sdp = (
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n"
        "a=candidate:a 1 udp 1 127.0.0.1 5000 typ host\r\n"
        "a=candidate:b 1 udp 1 192.0.2.9 5001 typ srflx raddr 127.0.0.1 rport 5000\r\n"
    )
    check_host_candidates(sdp, ("127.0.0.1",))  # server-reflexive ones are not host
    with pytest.raises(RuntimeError, match=r"outside host_addresses: 127\.0\.0\.1"):
        check_host_candidates(sdp, ("::1",))
    with pytest.raises(RuntimeError, match=r"outside host_addresses: x\.local"):
        check_host_candidates(sdp.replace("127.0.0.1 5000", "x.local 5000"), ("127.0.0.1",))
