"""Fuzz target: the signaling server's whole request handling, in process.

Each input becomes one POST /rpc body for a real `RondevuServer` on in-memory SQLite:
either the raw bytes, or - more often - a batch of well-signed calls whose method and
parameters are decoded from the input (huge and fractional numbers, deep arrays, odd
strings), so the handlers behind authentication are reached too.  Whatever arrives, the
server must answer with one of its documented statuses and JSON, and no call may end
in ``Internal server error``: that reply means a handler met an input it did not
expect.  Run it from the repository root: ``python -m fuzz.fuzz_server --iterations
2000`` (see `fuzz._runner`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from fuzz._runner import run
from rondevu_core.rpc import Method
from rondevu_core.rules.signing import KeyPair, build_message, expected_context
from rondevu_server.config import ServerConfig
from rondevu_server.messages import INTERNAL_ERROR
from rondevu_server.server import RondevuServer

NOW = 1_765_700_000_000
KEY = KeyPair.from_seed(bytes(range(32)))
USER = "fuzzer"
METHODS = tuple(Method)
PARAM_NAMES: tuple[str, ...] = (
    "serviceFqn",
    "offers",
    "ttl",
    "limit",
    "offset",
    "offerId",
    "sdp",
    "since",
)
PARAM_NAMES += ("candidates", "username")
NUMBERS: tuple[Any, ...] = (0, -1, 1, 2**31, 2**53 + 1, 2**63, 2**64 + 7, 1e30, 1e308, 0.5)
NUMBERS += (-(2**63), 5e-324, 60_000, NOW)
STRINGS: tuple[str, ...] = (
    "",
    "x",
    "chat:1.0.0",
    f"chat:1.0.0@{USER}",
    "a" * 64,
    "f" * 64,
    "\x00",
    "é",
)
STRINGS += ("v=0\r\n", "1.0.0-" + "a" * 200, " " * 5, "%_", "\ud800")

_loop: asyncio.AbstractEventLoop | None = None
_server: RondevuServer | None = None


def _server_on_loop() -> tuple[asyncio.AbstractEventLoop, RondevuServer]:
    """One server for the whole run (its database grows as a real one would)."""
    global _loop, _server
    if _loop is None or _server is None:
        _loop = asyncio.new_event_loop()
        config = ServerConfig(db=":memory:", rate_limit_per_second=0)
        _server = _loop.run_until_complete(RondevuServer.open(config, clock=lambda: NOW))
    return _loop, _server


class _Reader:
    """Draws small choices from the input bytes (zeros once they run out)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def byte(self) -> int:
        value = self.data[self.at] if self.at < len(self.data) else 0
        self.at += 1
        return value

    def value(self, depth: int = 0) -> Any:
        kind = self.byte() % 8
        if kind == 0:
            return NUMBERS[self.byte() % len(NUMBERS)]
        if kind == 1:
            return STRINGS[self.byte() % len(STRINGS)]
        if kind == 2:
            return None if self.byte() % 2 else bool(self.byte() % 2)
        if kind == 3 and depth < 3:
            return [self.value(depth + 1) for _ in range(self.byte() % 4)]
        if kind == 4 and depth < 3:
            return {PARAM_NAMES[self.byte() % len(PARAM_NAMES)]: self.value(depth + 1)}
        if kind == 5:
            return [[[[["deep"]]]]] * (self.byte() % 3)
        if kind == 6:
            return {"sdp": STRINGS[self.byte() % len(STRINGS)]}
        return {"candidate": STRINGS[self.byte() % len(STRINGS)], "sdpMid": "0"}


def _call(reader: _Reader) -> dict[str, Any]:
    method = METHODS[reader.byte() % len(METHODS)]
    params = {PARAM_NAMES[reader.byte() % len(PARAM_NAMES)]: reader.value() for _ in range(3)}
    try:
        context = expected_context(method, params)
    except (TypeError, ValueError):
        context = None
    message = build_message(method, USER, context, NOW)
    return {
        "method": method,
        "message": message,
        "signature": KEY.sign(message),
        "publicKey": KEY.public_key,
        "params": params,
    }


def _body(data: bytes) -> bytes:
    if not data or data[0] % 4 == 0:
        return data[1:]
    reader = _Reader(data[1:])
    calls = [_call(reader) for _ in range(1 + reader.byte() % 3)]
    payload: Any = calls[0] if data[0] % 4 == 1 else calls
    return json.dumps(payload).encode("utf-8", "surrogatepass")


def test_one_input(data: bytes) -> None:
    """One body in, one well-formed reply out; no call may fail internally."""
    loop, server = _server_on_loop()
    status, reply = loop.run_until_complete(server.handle_rpc_body(_body(data)))
    assert status in {200, 400, 413}, status
    decoded = json.loads(reply)
    for item in decoded if isinstance(decoded, list) else [decoded]:
        assert isinstance(item, dict), item
        assert item.get("error") != INTERNAL_ERROR, (data, item)


if __name__ == "__main__":
    sys.exit(run(test_one_input, name="fuzz_server", default_iterations=2000, max_len=256))
