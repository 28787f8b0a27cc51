"""The connection's vocabulary of states, roles and internal names, and its moves.

Everything here is data: the ten states of 0.18.9, the two roles, the names of the
connection's deadlines and calls, and the state sets and named sets of moves the
transition table's rows are written with (`rondevu_core.connection.table` derives
`EDGES` from those rows).  No behaviour lives here.
"""

from __future__ import annotations

from enum import Enum

from rondevu_core.buffer import Payload

__all__ = [
    "ATTEMPT",
    "CLOSING",
    "DESCRIBED",
    "EARLY_FRAMES_MAX",
    "FETCHED",
    "GIVE_UP",
    "HANDSHAKE",
    "ICE_CHECKS",
    "LIVE",
    "LOSS",
    "PC_ALIVE",
    "PROGRESS",
    "RESUMED",
    "STAY",
    "Call",
    "Deferred",
    "Move",
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
Move = tuple[State, State]
"""One state change, from the first state to the second."""

LOSS: frozenset[Move] = frozenset(
    {(a, S.FAILED) for a in HANDSHAKE | {S.INITIALIZING, S.RECONNECTING}}
    | {(S.CONNECTED, S.DISCONNECTED), (S.DISCONNECTED, S.FAILED)}
    | {(S.DISCONNECTED, S.RECONNECTING), (S.FAILED, S.RECONNECTING)}
)
"""A failure: the attempt fails (an established link is first lost), then a reconnection
is scheduled or the connection gives up, staying FAILED."""

PROGRESS: frozenset[Move] = frozenset(
    {(S.SIGNALING, S.CONNECTING), (S.CHECKING, S.CONNECTING)}
    | {(a, S.CONNECTED) for a in (S.SIGNALING, S.CHECKING, S.CONNECTING)}
    | {(S.DISCONNECTED, S.CONNECTED), (S.RECONNECTING, S.CONNECTED)}
)
"""One half of the link comes up (ICE connected, or the channel open): CONNECTING, or
CONNECTED when the other half is up already - also a softly dropped link recovering."""

ICE_CHECKS: frozenset[Move] = frozenset({(S.SIGNALING, S.CHECKING)})
"""ICE starts checking candidate pairs."""

DESCRIBED: frozenset[Move] = frozenset({(S.GATHERING, S.SIGNALING)}) | PROGRESS
"""Our description is out (the answerer's answer; the offerer's published offer), and
the link may already be half or wholly up."""

ATTEMPT: frozenset[Move] = frozenset({(S.RECONNECTING, S.INITIALIZING)})
"""A reconnection attempt starts."""

FETCHED: frozenset[Move] = frozenset({(S.INITIALIZING, S.GATHERING)})
"""The answerer has an offer (or the offerer its data channel): the description is made."""

GIVE_UP: frozenset[Move] = frozenset({(S.RECONNECTING, S.FAILED)})
"""An offerer whose peer did not come back in time gives up."""

CLOSING: frozenset[Move] = frozenset({(a, S.CLOSED) for a in LIVE})
"""Closed for good."""

RESUMED: frozenset[Move] = frozenset(
    {(a, S.SIGNALING) for a in (S.CHECKING, S.CONNECTING, S.DISCONNECTED, S.RECONNECTING)}
    | {(S.CONNECTED, S.DISCONNECTED)}
)
"""An offerer takes over a fresh offer's peer connection for its session (`resume_with`):
back to SIGNALING, a link that still looked up being dropped first."""

STAY: frozenset[Move] = frozenset()
"""No state change."""

EARLY_FRAMES_MAX = 4096
"""Session frames kept while the first link is not yet reported up (the session starts
with it); a peer that sends more before our side sees the link is misbehaving (each
frame beyond is a `ProtocolViolation`)."""


def payload_size(data: Payload) -> int:
    """The size of a message on the wire: UTF-8 bytes for text."""
    return len(data.encode()) if isinstance(data, str) else len(data)
