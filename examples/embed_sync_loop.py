"""Embedding the core: a plain synchronous loop with its own clock, no Rondevu driver.

The loop below runs an answerer `Connection` the way any runtime would: feed inputs,
perform the queued actions, keep one timer at ``get_timer()``.  It keeps the core's two
clocks apart: ``now`` on every input is a private monotonic clock (deadlines only), and
``unix_ms`` on RPC results is the wall time the server's timestamps are checked against.
Its "server" and "peer" are two tiny stand-ins written here (a dict of offers; a peer
that connects as soon as it has the remote description), so the example needs nothing
but ``rondevu_core``.

Run: ``python examples/embed_sync_loop.py`` - it prints the events and ends CONNECTED.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from rondevu_core.actions import (
    AddRemoteCandidate,
    ClosePeerConnection,
    CreateAnswer,
    CreatePeerConnection,
    SendData,
    SendRpc,
    SetRemoteDescription,
)
from rondevu_core.connection import Connection, State
from rondevu_core.inputs import (
    ChannelOpen,
    Connect,
    IceConnectionStateChanged,
    Input,
    LocalDescriptionReady,
    RemoteDescriptionSet,
    RpcResult,
    SendMessage,
)
from rondevu_core.rpc import Method, RpcFailed, RpcOk, RpcRequest
from rondevu_core.rules.fqn import ServiceFqn

WALL_START_MS = 1_765_700_000_000
OFFER_SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def tiny_server(request: RpcRequest) -> Any:
    """Just enough of §7 for one answerer: one offer, accept the answer, no candidates."""
    if request.method is Method.GET_SERVICE:
        return RpcOk(result={"offerId": "f" * 64, "sdp": OFFER_SDP, "username": "alice"})
    if request.method is Method.ANSWER_OFFER:
        return RpcOk(result={"success": True, "offerId": "f" * 64})
    if request.method is Method.GET_ICE_CANDIDATES:
        return RpcOk(result={"candidates": [], "offerId": "f" * 64})
    return RpcFailed(error=f"Unknown method: {request.method.value}")


def run(max_ms: int = 60_000) -> tuple[Connection, list[str]]:
    """Drive one answerer to CONNECTED on a private clock; return it and its event names."""
    clock = 0  # our own monotonic clock: it only moves when we say so

    def wall_ms() -> int:
        return WALL_START_MS + clock  # a wall clock that moves with it, for the example

    conn = Connection.answerer(
        ServiceFqn(service="chat", version="1.0.0", username="alice"),
        unit_random=random.Random(0).random,
    )
    inbox: deque[Input] = deque([Connect(now=clock)])
    names: list[str] = []
    conn_sent: list[Any] = []
    end = clock + max_ms
    while clock < end and conn.state is not State.CONNECTED:
        if inbox:
            conn.handle(inbox.popleft())
        else:
            at = conn.get_timer()
            if at is None:
                break
            clock = max(clock, at)
            conn.handle_timer(clock)
        # Perform every action; the results become inputs on the next turns.
        while (action := conn.next_action()) is not None:
            if isinstance(action, SendRpc):
                outcome = tiny_server(action.request)
                inbox.append(
                    RpcResult(now=clock, call_id=action.call_id, outcome=outcome, unix_ms=wall_ms())
                )
            elif isinstance(action, SetRemoteDescription):
                inbox.append(RemoteDescriptionSet(now=clock, pc_id=action.pc_id))
            elif isinstance(action, CreateAnswer):
                sdp = OFFER_SDP.replace("o=- 1", "o=- 2")
                inbox.append(
                    LocalDescriptionReady(now=clock, pc_id=action.pc_id, sdp=sdp, complete=True)
                )
                # Our pretend peer connects right after the answer is set.
                inbox.append(
                    IceConnectionStateChanged(now=clock, pc_id=action.pc_id, state="connected")
                )
                inbox.append(ChannelOpen(now=clock, pc_id=action.pc_id))
            elif isinstance(action, SendData):
                conn_sent.append(action.data)
            elif isinstance(
                action, CreatePeerConnection | AddRemoteCandidate | ClosePeerConnection
            ):
                pass  # a real runtime would call its WebRTC stack here
        while (event := conn.next_event()) is not None:
            names.append(event.name)
        if conn.state is State.GATHERING and not conn_sent and "message:buffered" not in names:
            conn.handle(SendMessage(now=clock, data="queued before connect"))
    return conn, names


if __name__ == "__main__":
    connection, events = run()
    print("\n".join(events))
    print("final state:", connection.state.value)
