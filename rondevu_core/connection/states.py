"""The connection's vocabulary of states, roles and internal names, and its `EDGES`.

Everything here is data: the ten states of 0.18.9, the two roles, the names of the
connection's deadlines and calls, the state sets the transition table is written in,
and every state change a handler may make.  No behaviour lives here.
"""

from __future__ import annotations

from enum import Enum

from rondevu_core.buffer import Payload

__all__ = [
    "EARLY_FRAMES_MAX",
    "EDGES",
    "HANDSHAKE",
    "LIVE",
    "LOSS",
    "PC_ALIVE",
    "PROGRESS",
    "Call",
    "Deferred",
    "Role",
    "S",
    "State",
    "Timer",
    "payload_size",
]


class State(Enum):
    """The ten connection states of 0.18.9."""

    INITIALIZING = "initializing"
    GATHERING = "gathering"
    SIGNALING = "signaling"
    CHECKING = "checking"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


class Role(Enum):
    """Which side of the offer/answer exchange this connection plays."""

    OFFERER = "offerer"
    ANSWERER = "answerer"


class Timer(Enum):
    """The connection's own deadlines, each a trigger of the transition table.

    ``SUBMACHINES`` is not a deadline of its own: it stands for whatever falls due in
    the ICE exchange or the delivery session (polls, acknowledgements, the heartbeat),
    which `Connection.handle_timer` runs after its own."""

    CONNECTION = "connection"
    HANDSHAKE = "handshake"
    GATHERING = "gathering"
    RECONNECT = "reconnect"
    BUFFER = "buffer"
    RESUME = "resume"
    PROBE = "probe"
    SUBMACHINES = "submachines"


class Call(Enum):
    """What a signaling call of the connection itself is for."""

    PROBE = "probe"
    FETCH_OFFER = "getService"
    ANSWER = "answerOffer"


class Deferred(Enum):
    """What a paused reconnection will do on resume."""

    SCHEDULE = "schedule"
    ATTEMPT = "attempt"


S = State
HANDSHAKE = frozenset({S.GATHERING, S.SIGNALING, S.CHECKING, S.CONNECTING})
PC_ALIVE = HANDSHAKE | {S.CONNECTED, S.DISCONNECTED, S.RECONNECTING}
LIVE = frozenset(State) - {S.CLOSED}
LOSS = frozenset({S.DISCONNECTED, S.FAILED, S.RECONNECTING})
"""Where a failure leads: the link lost, then a reconnection scheduled, or given up."""
PROGRESS = frozenset({S.CONNECTING, S.CONNECTED})
"""Where one half of the link coming up leads (ICE connected, or the channel open)."""

EARLY_FRAMES_MAX = 4096
"""Session frames kept while the link is not yet reported up; a peer that sends more
before our side sees the link is misbehaving (each frame beyond is a `ProtocolViolation`)."""

EDGES: frozenset[tuple[State, State]] = frozenset(
    {(S.INITIALIZING, S.GATHERING), (S.GATHERING, S.SIGNALING)}
    | {(S.SIGNALING, S.CHECKING), (S.SIGNALING, S.CONNECTING), (S.CHECKING, S.CONNECTING)}
    | {(a, S.CONNECTED) for a in (S.SIGNALING, S.CHECKING, S.CONNECTING)}
    | {(S.CONNECTED, S.DISCONNECTED), (S.DISCONNECTED, S.RECONNECTING)}
    | {(S.DISCONNECTED, S.CONNECTED), (S.RECONNECTING, S.CONNECTED)}
    | {(S.RECONNECTING, S.INITIALIZING), (S.DISCONNECTED, S.FAILED)}
    | {(a, S.FAILED) for a in HANDSHAKE | {S.INITIALIZING, S.RECONNECTING}}
    | {(S.FAILED, S.RECONNECTING)}
    # An offerer resuming its session on a new peer connection (`resume_with`).
    | {(a, S.SIGNALING) for a in (S.CHECKING, S.CONNECTING, S.DISCONNECTED, S.RECONNECTING)}
    | {(a, S.CLOSED) for a in LIVE}
)
"""Every state change a handler may make."""


def payload_size(data: Payload) -> int:
    """The size of a message on the wire: UTF-8 bytes for text."""
    return len(data.encode()) if isinstance(data, str) else len(data)
