"""The browser's session layer (``web/session.js``, run by Node) against the Python
core's `DeliverySession`, frame for frame, without a browser or a network.

Hypothesis draws schedules of sends both ways (text and bytes, chunked: frames of
64 bytes), partial deliveries and link cuts that lose whatever was in flight; every
frame one machine produces is the input of the other, some of them again (stale
duplicates) and some never (a hole, which only the next link's retransmission fills).
Invariants: each side delivers exactly what the other sent, once, in order, and
neither rejects a frame other than one past a hole.  Two fixed cases check the HELLO
rule for a peer that lost the session, each way.  Skipped when Node is absent (the
browser tests cover the same code in Chromium).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rondevu_core.delivery import SessionConfig
from rondevu_core.delivery.machine import (
    ChannelDown,
    ChannelUp,
    Delivered,
    DeliverySession,
    FrameReceived,
    FrameRejected,
    PeerReset,
    SendPayload,
    Transmit,
)

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
SESSION_JS = Path(__file__).resolve().parent.parent / "drivers/rondevu_server/web/session.js"
FRAME = 64

BRIDGE = r"""
const { DeliverySession, sessionConfig } = await import(process.argv[1]);
const hex = (b) => Buffer.from(b).toString("hex");
const data = (d) => ("text" in d ? d.text : new Uint8Array(Buffer.from(d.hex, "hex")));
let s = null;
const rl = (await import("node:readline")).createInterface({ input: process.stdin });
for await (const line of rl) {
  const c = JSON.parse(line);
  if (c.op === "new") s = new DeliverySession(sessionConfig({ maxFrameBytes: c.frame }));
  else if (c.op === "up") s.channelUp(0);
  else if (c.op === "down") s.channelDown();
  else if (c.op === "send") s.send(data(c.data), 0);
  else if (c.op === "frame") s.frame(new Uint8Array(Buffer.from(c.hex, "hex")), 0);
  const events = s.takeEvents().map((e) => e.type !== "delivered" ? e : {
    type: e.type, data: typeof e.data === "string" ? { text: e.data } : { hex: hex(e.data) } });
  console.log(JSON.stringify({ frames: s.takeFrames().map(hex), events }));
}
"""


class JsSession:
    """One `DeliverySession` of session.js in a Node process, driven line by line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.delivered: list[str | bytes] = []
        self.kinds: list[str] = []
        self.errors: list[str] = []

    def call(self, op: str, **args: Any) -> list[bytes]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        for event in reply["events"]:
            self.kinds.append(event["type"])
            if event["type"] == "rejected":
                self.errors.append(event["error"])
            if event["type"] == "delivered":
                item = event["data"]
                self.delivered.append(
                    item["text"] if "text" in item else bytes.fromhex(item["hex"])
                )
        return [bytes.fromhex(frame) for frame in reply["frames"]]

    def reset(self) -> list[bytes]:
        self.delivered, self.kinds, self.errors = [], [], []
        return self.call("new", frame=FRAME)

    def send(self, data: str | bytes) -> list[bytes]:
        wire = {"text": data} if isinstance(data, str) else {"hex": data.hex()}
        return self.call("send", data=wire)


@pytest.fixture(scope="module")
def js() -> Iterator[JsSession]:
    assert NODE is not None
    process = subprocess.Popen(
        [NODE, "--input-type=module", "-e", BRIDGE, SESSION_JS.as_uri()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield JsSession(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


class PySession:
    """The Python core's machine, with what it delivered and reported."""

    def __init__(self) -> None:
        self.machine = DeliverySession(SessionConfig(max_frame_bytes=FRAME))
        self.delivered: list[str | bytes] = []
        self.rejected: list[str] = []
        self.reset = False

    def handle(self, event: Any) -> list[bytes]:
        self.machine.handle(event)
        frames = []
        while (action := self.machine.next_action()) is not None:
            assert isinstance(action, Transmit)
            frames.append(action.data)
        while (out := self.machine.next_event()) is not None:
            if isinstance(out, Delivered):
                self.delivered.append(out.data)
            elif isinstance(out, FrameRejected):
                self.rejected.append(str(out.error))
            elif isinstance(out, PeerReset):
                self.reset = True
        return frames


payloads = st.one_of(st.text(max_size=150), st.binary(max_size=150))
steps = st.lists(
    st.one_of(
        st.tuples(st.just("py-send"), payloads),
        st.tuples(st.just("js-send"), payloads),
        st.tuples(st.just("to-js"), st.integers(0, 8)),
        st.tuples(st.just("to-py"), st.integers(0, 8)),
        st.tuples(st.just("cut"), st.none()),
        st.tuples(st.just("again-to-js"), st.integers(0, 5)),
        st.tuples(st.just("again-to-py"), st.integers(0, 5)),
        st.tuples(st.just("hole-to-js"), st.none()),
        st.tuples(st.just("hole-to-py"), st.none()),
    ),
    max_size=30,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps)
def test_the_page_and_the_python_core_deliver_each_other_exactly_once(
    js: JsSession, schedule: list[tuple[str, Any]]
) -> None:
    py = PySession()
    js.reset()
    to_js: list[bytes] = [*py.handle(ChannelUp(now=0))]
    to_py: list[bytes] = [*js.call("up")]
    sent_py: list[str | bytes] = []
    sent_js: list[str | bytes] = []
    seen_js: list[bytes] = []  # every frame carried into each side, for duplicates
    seen_py: list[bytes] = []

    def relink() -> None:
        # The link dies with what was in flight; a new one comes up on both sides.
        to_js.clear()
        to_py.clear()
        py.handle(ChannelDown(now=0))
        js.call("down")
        to_js.extend(py.handle(ChannelUp(now=0)))
        to_py.extend(js.call("up"))

    def carry(n: int, *, into_js: bool) -> None:
        queue = to_js if into_js else to_py
        for _ in range(min(n, len(queue))):
            frame = queue.pop(0)
            if frame[0] != 3:  # a HELLO belongs to its channel: never seen again
                (seen_js if into_js else seen_py).append(frame)
            if into_js:
                to_py.extend(js.call("frame", hex=frame.hex()))
            else:
                to_js.extend(py.handle(FrameReceived(now=0, data=frame)))

    for kind, arg in schedule:
        if kind == "py-send":
            sent_py.append(arg)
            to_js.extend(py.handle(SendPayload(now=0, data=arg)))
        elif kind == "js-send":
            sent_js.append(arg)
            to_py.extend(js.send(arg))
        elif kind == "cut":
            relink()
        elif kind.startswith("again-"):
            seen = seen_js if kind == "again-to-js" else seen_py
            if seen:
                (to_js if kind == "again-to-js" else to_py).insert(0, seen[-1 - arg % len(seen)])
        elif kind.startswith("hole-"):
            queue = to_js if kind == "hole-to-js" else to_py
            if queue:
                queue.pop(0)
        else:
            carry(arg, into_js=kind == "to-js")
        assert js.delivered == sent_py[: len(js.delivered)]
        assert py.delivered == sent_js[: len(py.delivered)]
    relink()
    while to_js or to_py:
        carry(len(to_js), into_js=True)
        carry(len(to_py), into_js=False)
    assert js.delivered == sent_py
    assert py.delivered == sent_js
    holes = {"frame out of sequence"}
    assert set(py.rejected) <= holes
    assert set(js.errors) <= holes
    assert py.reset is False
    assert "reset" not in js.kinds


def test_a_page_whose_peer_lost_the_session_starts_a_new_one(js: JsSession) -> None:
    """The page received frames; the Python side comes back with a fresh machine
    (its pool gave the session up): the page's HELLO check ends its session."""
    js.reset()
    py = PySession()
    frames = py.handle(ChannelUp(now=0)) + py.handle(SendPayload(now=0, data="one"))
    js.call("up")
    for frame in frames:
        js.call("frame", hex=frame.hex())
    assert js.delivered == ["one"]
    js.call("down")
    fresh = PySession()
    hello = fresh.handle(ChannelUp(now=0))
    js_hello = js.call("up")
    for frame in hello:
        js.call("frame", hex=frame.hex())
    assert "reset" in js.kinds
    # The fresh Python side ignores the old session's HELLO (it says "estranged").
    for frame in js_hello:
        fresh.handle(FrameReceived(now=0, data=frame))
    assert fresh.rejected == []
    assert fresh.reset is False


def test_the_python_side_notices_a_page_that_lost_the_session(js: JsSession) -> None:
    py = PySession()
    js.reset()
    js.call("up")
    py.handle(ChannelUp(now=0))
    for frame in js.send("hello"):
        py.handle(FrameReceived(now=0, data=frame))
    assert py.delivered == ["hello"]
    py.handle(ChannelDown(now=0))
    js.reset()  # the page was opened again and kept nothing
    hello = js.call("up")
    py.handle(ChannelUp(now=0))
    for frame in hello:
        py.handle(FrameReceived(now=0, data=frame))
    assert py.reset is True


CONFIGS: list[dict[str, Any]] = [
    {},
    {"ack_every": 0},
    {"heartbeat_timeout_ms": 500},
    {"heartbeat_interval_ms": 3000, "heartbeat_timeout_ms": 4000},
    {"max_frame_bytes": 18},
    {"window_bytes": -1},
    {"on_peer_reset": "keep"},
    {"resume_timeout_ms": 1500, "on_peer_reset": "drop"},
]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def test_the_page_refuses_the_settings_the_python_side_refuses() -> None:
    assert NODE is not None
    script = """
    const { sessionConfig } = await import(process.argv[1]);
    const out = JSON.parse(process.argv[2]).map((c) => {
      try { sessionConfig(c); return true; } catch { return false; }
    });
    console.log(JSON.stringify(out));
    """
    camel = [{_camel(k): v for k, v in c.items()} for c in CONFIGS]
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script, SESSION_JS.as_uri(), json.dumps(camel)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    accepted = []
    for config in CONFIGS:
        try:
            SessionConfig(**config)
        except ValueError:
            accepted.append(False)
        else:
            accepted.append(True)
    assert json.loads(done.stdout) == accepted
