"""No input crashes the server: arbitrary bodies through `RondevuServer.handle_rpc_body`.

Runs in-process (no socket) against a real SQLite storage.  Every reply must be a
well-formed protocol reply, and none may be an internal error: each odd input has to
meet a deliberate check, not an exception.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rondevu_core.rules.signing import KeyPair, build_message, expected_context
from rondevu_server.config import ServerConfig
from rondevu_server.methods import METHODS as SERVER_METHODS
from rondevu_server.server import RondevuServer

NOW = 1_765_700_000_000
KEY = KeyPair.generate(os.urandom)
METHODS = list(SERVER_METHODS)  # the nine method names
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
param_values = st.one_of(
    json_values,
    st.sampled_from(["chat:1.0.0@fuzzer", "chat:1.0.0", "a" * 64, "v=0\r\n", "\ud800", "\x00"]),
    st.lists(st.fixed_dictionaries({"sdp": st.text(max_size=20)}), max_size=3),
    st.lists(st.dictionaries(st.text(max_size=3), scalars, max_size=2), max_size=3),
)
params = st.dictionaries(
    st.sampled_from(
        [
            "serviceFqn",
            "offers",
            "ttl",
            "offerId",
            "sdp",
            "candidates",
            "since",
            "limit",
            "offset",
            "username",
        ]
    ),
    param_values,
    max_size=5,
)


@st.composite
def signed_calls(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(st.sampled_from(METHODS))
    call_params = draw(params)
    try:
        context = expected_context(method, call_params)
    except Exception:  # an unhashable or odd param: sign something anyway
        context = "x"
    message = build_message(method, "fuzzer", context, NOW)
    return {
        "method": method,
        "message": message,
        "signature": KEY.sign(message),
        "publicKey": KEY.public_key,
        "params": call_params,
    }


bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    signed_calls().map(lambda c: json.dumps(c).encode()),
    st.lists(signed_calls(), min_size=1, max_size=5).map(lambda c: json.dumps(c).encode()),
)


def test_no_body_crashes_the_server() -> None:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        # no rate limit: a 429 is a clean answer, but it would stop the fuzzing early
        RondevuServer.open(ServerConfig(db=":memory:", rate_limit_per_second=0), clock=lambda: NOW)
    )

    @settings(max_examples=400, deadline=None)
    @given(body=bodies)
    def check(body: bytes) -> None:
        status, reply = loop.run_until_complete(server.handle_rpc_body(body, "203.0.113.1"))
        assert status in {200, 400}
        decoded = json.loads(reply)
        items = decoded if isinstance(decoded, list) else [decoded]
        for item in items:
            assert isinstance(item, dict)
            if status == 200:
                assert isinstance(item["success"], bool)
                assert item.get("error") != "Internal server error", body

    try:
        check()
    finally:
        loop.run_until_complete(server.aclose())
        loop.close()
