"""Fuzz target: the connection and pool machines fed arbitrary driver reports and replies.

The input bytes choose a sequence of inputs (peer reports naming the current or a stale
peer connection, server replies to outstanding calls - well-formed, malformed or failed -
and clock jumps).  Only `ProtocolError` may escape (in practice it is reported as an
event), plus `UsageError` for application commands the bytes misuse.  Run it from the
repository root: ``python -m fuzz.fuzz_machines`` (atheris, when installed) or
``python -m fuzz.fuzz_machines --iterations 2000`` (a seeded loop; see `fuzz._runner`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from fuzz._inputs import arbitrary_input, connection_pc
from fuzz._runner import run
from rondevu_core.config import ConnectionConfig, PoolConfig
from rondevu_core.connection import Connection
from rondevu_core.errors import ProtocolError, UsageError
from rondevu_core.inputs import COMMAND_KINDS, Connect, InputKind, StartFilling
from rondevu_core.pool import OfferPool
from rondevu_core.rules.fqn import ServiceFqn

SERVICE = ServiceFqn(service="chat", version="1.0.0", username="alice")
KINDS = list(InputKind)


def test_one_input(data: bytes) -> None:
    """Run one machine over the inputs ``data`` encodes."""
    pos = 0

    def choose(options: Sequence[Any]) -> Any:
        nonlocal pos
        byte = data[pos % len(data)] if data else 0
        pos += 1
        return options[byte % len(options)]

    now = 1_765_700_000_000
    machine: Connection | OfferPool
    if choose([True, False]):
        machine = Connection.answerer(SERVICE, config=ConnectionConfig(), unit_random=lambda: 0.5)
        machine.handle(Connect(now=now))
    else:
        machine = OfferPool(PoolConfig(service=SERVICE, max_offers=2), unit_random=lambda: 0.5)
        machine.handle(StartFilling(now=now))
    calls: set[int] = set()
    for _ in range(len(data)):
        while (action := machine.next_action()) is not None:
            call_id = getattr(action, "call_id", None)
            if call_id is not None:
                calls.add(call_id)
        while machine.next_event() is not None:
            pass
        if choose([True, False, False]):
            now += choose([0, 1, 500, 1000, 30_000])
            at = machine.get_timer()
            if at is not None and at <= now:
                machine.handle_timer(now)
            continue
        kind = choose(KINDS)
        if isinstance(machine, Connection):
            pc = connection_pc(machine)
        else:
            pcs = [c.pc_id for c in machine.connections.values() if c.pc_id is not None]
            pc = choose(pcs) if pcs else 0
        event = arbitrary_input(kind, now, pc, sorted(calls), choose)
        if event is None:
            continue
        if kind is InputKind.RPC_RESULT:
            calls.discard(getattr(event, "call_id", -1))
        try:
            machine.handle(event)
        except UsageError:
            if kind not in COMMAND_KINDS:
                raise
        except ProtocolError:
            pass


if __name__ == "__main__":
    sys.exit(run(test_one_input, name="fuzz_machines", default_iterations=2000, max_len=200))
