"""Benchmark: inputs per second through the connection machine over realistic lifecycles.

One lifecycle: connect (getService, answer, candidates, ICE, channel), 1,000 messages
received and 1,000 sent, a drop seen as ``connectionState=closed``, the backoff timer,
a full reconnection, then close.  The inputs are recorded once from a scripted run, then
replayed into fresh machines (draining every action and event, as a driver would); the
baseline is an empty loop over the same inputs.  Goal: >= 100,000 inputs/s.

Run: ``python bench/bench_machines.py [--lifecycles N]``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rondevu_core.actions import CreatePeerConnection, SendRpc
from rondevu_core.connection import Connection, State
from rondevu_core.inputs import (
    ChannelMessage,
    ChannelOpen,
    Close,
    Connect,
    IceConnectionStateChanged,
    Input,
    LocalDescriptionReady,
    PeerConnectionStateChanged,
    RemoteDescriptionSet,
    RpcResult,
    SendMessage,
)
from rondevu_core.rpc import Method, RpcOk
from rondevu_core.rules.fqn import ServiceFqn

SERVICE = ServiceFqn(service="chat", version="1.0.0", username="alice")
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
Step = tuple[str, Any]  # ("input", Input) or ("timer", now)


def reply(request: Any) -> Any:
    if request.method is Method.GET_SERVICE:
        return {"offerId": "f" * 64, "sdp": SDP, "username": "alice"}
    if request.method is Method.GET_ICE_CANDIDATES:
        return {"candidates": [], "offerId": "f" * 64}
    return {"success": True, "offerId": "f" * 64}


def record() -> list[Step]:
    """Script one lifecycle against a live machine and record its inputs in order."""
    conn = Connection.answerer(SERVICE, unit_random=lambda: 0.5)
    now = 1_765_700_000_000
    steps: list[Step] = []

    def feed(event: Input) -> None:
        steps.append(("input", event))
        conn.handle(event)

    def settle() -> None:
        pending: list[Input] = []
        while (action := conn.next_action()) is not None:
            if isinstance(action, SendRpc):
                pending.append(
                    RpcResult(
                        now=now,
                        call_id=action.call_id,
                        outcome=RpcOk(result=reply(action.request)),
                        unix_ms=now,
                    )
                )
            elif isinstance(action, CreatePeerConnection):
                pc = action.pc_id
                pending.append(RemoteDescriptionSet(now=now, pc_id=pc))
                pending.append(LocalDescriptionReady(now=now, pc_id=pc, sdp=SDP, complete=True))
        while conn.next_event() is not None:
            pass
        for event in pending:
            feed(event)
            settle()

    def connect_pc() -> None:
        pc = conn.pc_id
        assert pc is not None
        for event in (
            IceConnectionStateChanged(now=now, pc_id=pc, state="checking"),
            IceConnectionStateChanged(now=now, pc_id=pc, state="connected"),
            ChannelOpen(now=now, pc_id=pc),
        ):
            feed(event)
            settle()

    feed(Connect(now=now))
    settle()
    connect_pc()
    assert conn.state is State.CONNECTED
    pc = conn.pc_id
    assert pc is not None
    for i in range(1000):
        feed(ChannelMessage(now=now, pc_id=pc, data=f"in {i}"))
        feed(SendMessage(now=now, data=f"out {i}"))
        settle()
    feed(PeerConnectionStateChanged(now=now, pc_id=pc, state="closed"))
    settle()
    at = conn.get_timer()
    assert at is not None
    now = at
    steps.append(("timer", now))
    conn.handle_timer(now)
    settle()
    connect_pc()
    assert conn.state is State.CONNECTED
    feed(Close(now=now))
    settle()
    return steps


def replay(steps: list[Step]) -> None:
    conn = Connection.answerer(SERVICE, unit_random=lambda: 0.5)
    handle, timer = conn.handle, conn.handle_timer
    next_action, next_event = conn.next_action, conn.next_event
    for what, value in steps:
        if what == "input":
            handle(value)
        else:
            timer(value)
        while next_action() is not None:
            pass
        while next_event() is not None:
            pass
    assert conn.state is State.CLOSED


def empty(steps: list[Step]) -> None:
    # The same unpacking and branch as `replay`, without the machine.
    for what, _value in steps:
        if what == "input":
            pass


def main(argv: list[str]) -> None:
    lifecycles = int(argv[argv.index("--lifecycles") + 1]) if "--lifecycles" in argv else 50
    steps = record()
    total = len(steps) * lifecycles
    start = time.perf_counter()
    for _ in range(lifecycles):
        replay(steps)
    machine = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(lifecycles):
        empty(steps)
    baseline = time.perf_counter() - start
    print(f"{lifecycles} lifecycles x {len(steps)} inputs = {total} inputs")
    print(f"machine:    {total / machine:,.0f} inputs/s ({machine * 1e6 / total:.2f} us/input)")
    print(f"empty loop: {total / baseline:,.0f} inputs/s ({baseline * 1e6 / total:.3f} us/input)")
    print(
        f"ratio:      the machines cost {machine / baseline:,.0f}x the empty loop; "
        f"goal >= 100,000 inputs/s: {'met' if total / machine >= 100_000 else 'NOT met'}"
    )


if __name__ == "__main__":
    main(sys.argv)
