"""The two error families of the core (STYLE.md point 4).

`ValidationError` is raised at the caller for bad local input; its message is the exact
protocol text of PROTOCOL.md, so a server can put ``str(error)`` on the wire unchanged.

`ProtocolError` describes remote misbehaviour (a malformed server reply, an impossible
event order reported by a driver).  It is the only exception the core's fuzz targets may
see escape.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "RondevuError", "ValidationError"]


class RondevuError(Exception):
    """Base class of every error raised by Rondevu packages."""


class ValidationError(RondevuError, ValueError):
    """Input that breaks a protocol rule; ``str(err)`` is the exact wire error text."""


class ProtocolError(RondevuError):
    """The remote side (server or peer) did something the protocol does not allow."""
