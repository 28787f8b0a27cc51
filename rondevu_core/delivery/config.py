"""Configuration of the session layer (`SessionConfig`), frozen and validated on creation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rondevu_core.delivery.frames import DATA_HEADER_SIZE

__all__ = ["DEFAULT_SESSION", "SessionConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """How the session layer behaves once both ends agreed on it.

    Times in milliseconds.  The defaults detect a silent peer within 2.5 s (a frame at
    least every second, the link declared dead after 2.5 s without one) and bound the
    unacknowledged window to 4096 messages and 16 MiB.
    """

    heartbeat_interval_ms: int = 1000
    """Send an ACK frame when nothing else was sent for this long."""
    heartbeat_timeout_ms: int = 2500
    """Declare the link dead after this long without any frame from the peer."""
    ack_delay_ms: int = 20
    """Acknowledge received frames at most this late when there is nothing to piggy-back on."""
    ack_every: int = 32
    """...or at once after this many unacknowledged frames."""
    window_messages: int = 4096
    """Unacknowledged messages kept for retransmission, at most."""
    window_bytes: int = 16 * 1024 * 1024
    """Unacknowledged payload bytes kept for retransmission, at most."""
    max_frame_bytes: int = 262144
    """Largest frame sent on the channel, and never more than the peer's description
    announces (``a=max-message-size``; 64 KiB when it announces nothing, as aiortc
    assumes); longer messages are chunked."""
    max_message_bytes: int = 16 * 1024 * 1024
    """Largest message accepted from the application and reassembled from the peer."""
    on_window_full: Literal["raise", "report"] = "raise"
    """A synchronous send into a full window raises `WindowFullError` (``"raise"``) or
    refuses the message with a ``message:undelivered`` event (``"report"``)."""
    on_peer_reset: Literal["resend", "drop"] = "resend"
    """When the other end turns out to be a new process, re-send what it had not
    acknowledged to the new session (at-least-once) or drop it; reported either way."""
    resume_timeout_ms: int = 60000
    """Offering side: how long a session whose link was lost waits for its peer to come
    back before it gives up and reports what was not acknowledged."""

    def __post_init__(self) -> None:
        positive = (
            "heartbeat_interval_ms",
            "heartbeat_timeout_ms",
            "ack_delay_ms",
            "ack_every",
            "window_messages",
            "window_bytes",
            "max_message_bytes",
            "resume_timeout_ms",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms:
            raise ValueError("heartbeat_timeout_ms must exceed heartbeat_interval_ms")
        if self.max_frame_bytes <= DATA_HEADER_SIZE:
            raise ValueError(f"max_frame_bytes must exceed {DATA_HEADER_SIZE}")
        if self.on_window_full not in ("raise", "report"):
            raise ValueError("on_window_full must be 'raise' or 'report'")
        if self.on_peer_reset not in ("resend", "drop"):
            raise ValueError("on_peer_reset must be 'resend' or 'drop'")


DEFAULT_SESSION = SessionConfig()
"""The defaults, shared (the config is frozen)."""
