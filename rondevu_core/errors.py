"""The two error families of the core (STYLE.md point 4).

`ValidationError` is raised at the caller for bad local input; its message is the exact
protocol text of docs/protocol.md, so a server can put ``str(error)`` on the wire unchanged.

`UsageError` is raised at the caller when the application or a driver misuses a state
machine (sending on a closed connection, feeding a result for a call it never issued).

`ProtocolError` describes remote misbehaviour (a malformed server reply, an impossible
event order reported by a driver).  It is the only exception the core's fuzz targets may
see escape.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "RondevuError", "UsageError", "ValidationError"]


class RondevuError(Exception):
    """Base class of every error raised by Rondevu packages."""


class ValidationError(RondevuError, ValueError):
    """Input that breaks a protocol rule; ``str(err)`` is the exact wire error text."""


class ProtocolError(RondevuError):
    """The remote side (server or peer) did something the protocol does not allow."""


class UsageError(RondevuError, RuntimeError):
    """Local misuse of a state machine; raised at the caller, never caused by a peer."""
