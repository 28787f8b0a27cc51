"""Arbitrary inputs for the core machines: the fuzz target's, which the property tests reuse.

`arbitrary_input` builds one input of a given kind from a byte-driven chooser: peer
reports usually name the machine's current peer connection, RPC results answer one of
its outstanding calls with a well-formed, malformed or failed reply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rondevu_core.connection import Connection
from rondevu_core.inputs import (
    ChannelAnnounced,
    ChannelClosed,
    ChannelError,
    ChannelMessage,
    ChannelOpen,
    Close,
    Connect,
    IceConnectionStateChanged,
    IceGatheringStateChanged,
    Input,
    InputKind,
    LocalCandidate,
    LocalDescriptionReady,
    PauseReconnect,
    PeerConnectionStateChanged,
    PeerError,
    RemoteCandidateRejected,
    RemoteDescriptionSet,
    ResumeReconnect,
    RpcResult,
    SendMessage,
    StartFilling,
    StopFilling,
)
from rondevu_core.rpc import RpcFailed, RpcOk

Choose = Callable[[Sequence[Any]], Any]

CANDIDATE = {
    "candidate": "candidate:1 1 udp 2122260223 10.0.9.1 5001 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}
SDP = "v=0\r\no=- 9 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 x\r\na=mid:0\r\n"
RESULTS: list[Any] = [
    None,
    42,
    "x",
    [],
    {},
    {"offerId": "ab" * 32, "sdp": SDP, "username": "alice"},
    {"offerId": 3, "sdp": None},
    {"success": True, "offerId": "ab" * 32},
    {"candidates": [{"candidate": CANDIDATE, "createdAt": 5}], "offerId": "ab"},
    {"candidates": [{"candidate": {"candidate": 7}, "createdAt": True}, None]},
    {"candidates": "nope"},
    {"answers": [{"offerId": "ab" * 32, "answererId": "bob", "sdp": SDP, "answeredAt": 9}]},
    {"answers": [{"offerId": None}], "iceCandidates": {}},
    {"offers": [{"offerId": "ab" * 32, "sdp": SDP}]},
    {"offers": None},
]
OUTCOMES: list[Any] = [
    *(RpcOk(result=r) for r in RESULTS),
    RpcFailed(error="Offer not found"),
    RpcFailed(error="Offer already answered"),
    RpcFailed(error="boom", transport=True),
]
STATES = ["new", "checking", "connected", "completed", "disconnected", "failed", "closed", "x"]
CHANNELS = [0, 0, 0, 1]
"""Channel names for channel reports: mostly the first one, which the connection takes."""


def arbitrary_input(
    kind: InputKind, now: int, pc_id: int, calls: Sequence[int], choose: Choose
) -> Input | None:
    """One input of ``kind``; None when an RPC result is asked for but no call is open."""
    k = InputKind
    if kind is k.RPC_RESULT:
        if not calls:
            return None
        return RpcResult(now=now, call_id=choose(calls), outcome=choose(OUTCOMES), unix_ms=now)
    simple: dict[InputKind, Callable[[], Input]] = {
        k.CONNECT: lambda: Connect(now=now),
        k.SEND: lambda: SendMessage(now=now, data=choose(["m", b"b", ""])),
        k.CLOSE: lambda: Close(now=now),
        k.PAUSE_RECONNECT: lambda: PauseReconnect(now=now),
        k.RESUME_RECONNECT: lambda: ResumeReconnect(now=now),
        k.START_FILLING: lambda: StartFilling(now=now),
        k.STOP_FILLING: lambda: StopFilling(now=now),
        k.LOCAL_DESCRIPTION: lambda: LocalDescriptionReady(
            now=now, pc_id=pc_id, sdp=choose([SDP, "garbage"]), complete=choose([True, False])
        ),
        k.REMOTE_DESCRIPTION_SET: lambda: RemoteDescriptionSet(now=now, pc_id=pc_id),
        k.LOCAL_CANDIDATE: lambda: LocalCandidate(
            now=now, pc_id=pc_id, candidate=choose([CANDIDATE, {"candidate": ""}, {}])
        ),
        k.ICE_GATHERING_STATE: lambda: IceGatheringStateChanged(
            now=now, pc_id=pc_id, state=choose(["gathering", "complete"])
        ),
        k.ICE_CONNECTION_STATE: lambda: IceConnectionStateChanged(
            now=now, pc_id=pc_id, state=choose(STATES)
        ),
        k.PEER_CONNECTION_STATE: lambda: PeerConnectionStateChanged(
            now=now, pc_id=pc_id, state=choose(STATES)
        ),
        # Mostly the connection's channel (0), sometimes one the peer opened for itself.
        k.CHANNEL_ANNOUNCED: lambda: ChannelAnnounced(
            now=now, pc_id=pc_id, channel=choose(CHANNELS), label="c", local=choose([True, False])
        ),
        k.CHANNEL_OPEN: lambda: ChannelOpen(now=now, pc_id=pc_id, channel=choose(CHANNELS)),
        k.CHANNEL_CLOSED: lambda: ChannelClosed(now=now, pc_id=pc_id, channel=choose(CHANNELS)),
        k.CHANNEL_MESSAGE: lambda: ChannelMessage(
            now=now, pc_id=pc_id, channel=choose(CHANNELS), data="hello"
        ),
        k.CHANNEL_ERROR: lambda: ChannelError(
            now=now, pc_id=pc_id, channel=choose(CHANNELS), error="e"
        ),
        k.PEER_ERROR: lambda: PeerError(now=now, pc_id=pc_id, operation="op", error="e"),
        k.REMOTE_CANDIDATE_REJECTED: lambda: RemoteCandidateRejected(
            now=now, pc_id=pc_id, reason="bad candidate"
        ),
    }
    return simple[kind]()


def connection_pc(conn: Connection) -> int:
    """The pc id a report should name (the current one, or a never-used id)."""
    return conn.pc_id if conn.pc_id is not None else 10**9
