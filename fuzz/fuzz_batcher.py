"""Fuzz target: the RPC batcher under arbitrary call sequences and arbitrary server replies.

The input bytes choose the options, then a script of operations: submit calls, move the
clock and fire the timer, answer an in-flight batch with arbitrary JSON (built from the
bytes, or the bytes themselves parsed as JSON text), fail a batch, clear, close.  Nothing
the server says may make the batcher raise (only `ProtocolError` would be allowed, and
the batcher has no reason to raise even that); every submitted call must settle exactly
once, and at most ``max_batch_size`` calls may share a body.

Run from the repository root: ``python -m fuzz.fuzz_batcher`` (atheris, when installed)
or ``python -m fuzz.fuzz_batcher --iterations 10000`` (a seeded loop; see `fuzz._runner`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fuzz._runner import run
from rondevu_core.batcher import (
    BatcherOptions,
    BatchFailed,
    BatchReply,
    BatchSent,
    CallSettled,
    ClearQueue,
    CloseBatcher,
    RpcBatcher,
    SendBatch,
    SubmitCall,
)
from rondevu_core.errors import ProtocolError
from rondevu_core.rpc import Method, RpcRequest

_REQUEST = RpcRequest(method=Method.POLL, params={"since": 0})
_KEYS = ("success", "result", "error", "x")


class _Reader:
    """Reads small numbers off the input; yields zeros once it runs out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.data)

    def byte(self) -> int:
        if self.exhausted:
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def below(self, bound: int) -> int:
        return self.byte() % bound

    def take(self, count: int) -> bytes:
        chunk = self.data[self.pos : self.pos + count]
        self.pos += len(chunk)
        return chunk


def _json_value(reader: _Reader, depth: int = 0) -> Any:
    """An arbitrary JSON value, biased towards shapes that look like RPC replies."""
    kind = reader.below(9 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return reader.below(2) == 1
    if kind == 2:
        return reader.byte() - 128
    if kind == 3:
        return reader.take(reader.below(8)).decode("utf-8", "replace")
    if kind == 4:
        return {"success": True, "result": reader.byte()}
    if kind == 5:
        return {"success": False, "error": reader.take(reader.below(6)).decode("latin-1")}
    if kind in (6, 7):
        return {
            _KEYS[reader.below(4)]: _json_value(reader, depth + 1) for _ in range(reader.below(4))
        }
    return [_json_value(reader, depth + 1) for _ in range(reader.below(12))]


def test_one_input(data: bytes) -> None:
    """One fuzz case; raises only `ProtocolError` (or AssertionError for a real finding)."""
    reader = _Reader(data)
    options = BatcherOptions(
        max_batch_size=1 + reader.below(12),
        max_wait_ms=reader.below(64),
        throttle_interval_ms=reader.below(32),
        enabled=reader.below(4) != 0,
    )
    batcher = RpcBatcher(options)
    now = 0
    submitted: set[int] = set()
    settled: set[int] = set()
    in_flight: list[SendBatch] = []

    def drain() -> None:
        while (action := batcher.next_action()) is not None:
            assert isinstance(action, SendBatch)
            assert 1 <= len(action.calls) <= options.max_batch_size
            in_flight.append(action)
        while (event := batcher.next_event()) is not None:
            assert isinstance(event, CallSettled)
            assert event.call_id in submitted
            assert event.call_id not in settled
            settled.add(event.call_id)

    try:
        while not reader.exhausted:
            op = reader.below(8)
            if op <= 1 and not batcher.closed:
                call_id = batcher.free_call_id()
                batcher.handle(SubmitCall(now=now, call_id=call_id, request=_REQUEST))
                submitted.add(call_id)
            elif op == 2:
                now += reader.byte()
                batcher.handle_timer(now)
            elif op in (3, 4, 5) and in_flight:
                batch = in_flight.pop(reader.below(len(in_flight)))
                if op == 3:
                    reply: Any = _json_value(reader)
                elif op == 4:
                    try:
                        reply = json.loads(reader.take(reader.below(64)))
                    except ValueError:
                        reply = None
                else:
                    reply = [{"success": True, "result": 0}] * len(batch.calls)
                batcher.handle(
                    BatchSent(now=now, batch_id=batch.batch_id, result=BatchReply(body=reply))
                )
            elif op == 6 and in_flight:
                batch = in_flight.pop(reader.below(len(in_flight)))
                failed = BatchFailed(error="down")
                batcher.handle(BatchSent(now=now, batch_id=batch.batch_id, result=failed))
            elif op == 7 and reader.below(4) == 0:
                batcher.handle(CloseBatcher(now=now))
            elif op == 7:
                batcher.handle(ClearQueue(now=now))
            drain()
        batcher.handle(CloseBatcher(now=now))
        drain()
        assert settled == submitted
        assert batcher.get_timer() is None
    except ProtocolError:
        pass


if __name__ == "__main__":
    sys.exit(run(test_one_input, name="fuzz_batcher", default_iterations=10000, max_len=512))
