"""Fuzz target: the session layer's receiving side on arbitrary frames.

The input is cut into messages (a length byte, then that many bytes) fed to one
`DeliverySession` with a channel up, as a misbehaving peer could send them; decoding
and the machine must report every bad frame as a `FrameRejected` event and never raise,
and the reassembly buffer stays within ``max_message_bytes``.  Run it from the
repository root: ``python -m fuzz.fuzz_session`` (atheris, when installed) or
``python -m fuzz.fuzz_session --iterations 100000`` (a seeded loop; see `fuzz._runner`).
"""

from __future__ import annotations

import contextlib
import sys

from fuzz._runner import run
from rondevu_core.delivery import DeliverySession, SessionConfig
from rondevu_core.delivery.frames import decode_frame
from rondevu_core.delivery.machine import ChannelUp, FrameReceived, SendPayload
from rondevu_core.errors import ProtocolError

CONFIG = SessionConfig(max_message_bytes=64, max_frame_bytes=40)


def test_one_input(data: bytes) -> None:
    """Feed the frames of ``data`` to a session; only `ProtocolError` (from the bare
    decoder) may escape, and the machine itself never raises."""
    session = DeliverySession(CONFIG)
    session.handle(ChannelUp(now=0))
    session.handle(SendPayload(now=0, data=b"something to be acknowledged"))
    at = 0
    now = 0
    while at < len(data):
        size = data[at]
        frame = data[at + 1 : at + 1 + size]
        at += 1 + size
        now += 7
        session.handle(FrameReceived(now=now, data=frame))
        session.handle_timer(now)
        assert session.unacked_messages <= CONFIG.window_messages
        while session.next_action() is not None:
            pass
        while session.next_event() is not None:
            pass
    with contextlib.suppress(ProtocolError):
        decode_frame(data)


if __name__ == "__main__":
    sys.exit(run(test_one_input, name="fuzz_session", default_iterations=10000, max_len=256))
