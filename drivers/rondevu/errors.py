"""The exceptions the async client raises, all under `RondevuError`.

Which one a caller sees says who failed:

- `RpcError`: the server answered the call with ``{"success": false, "error": …}``;
  ``str(err)`` is the server's text unchanged (0.5.4 has no error codes, so callers
  match on it, as the original client does with ``not yet answered``).
  ``err.permanent`` says whether repeating the call can help (`rondevu_core.rules.error_kinds`).
  `UsernameTakenError` is the refusal of our identity, confirmed with ``getUser``.
- `TransportError`: no server answer exists for the call: network failure, timeout,
  non-2xx HTTP status, a reply that is not JSON or not a reply object (or list).
  `ClientClosedError` is the special case of a call cut short by ``aclose()``.
- `ProtocolError` (from the core): the server answered ``success: true`` with a result
  that is not the shape docs/protocol.md gives for that method.

`ValidationError` and `UsageError` are re-exported from the core for convenience.
"""

from __future__ import annotations

from rondevu_core.errors import ProtocolError, RondevuError, UsageError, ValidationError
from rondevu_core.rpc import Method
from rondevu_core.rules.error_kinds import ErrorKind, classify

__all__ = [
    "ClientClosedError",
    "ProtocolError",
    "RondevuError",
    "RpcError",
    "TransportError",
    "UsageError",
    "UsernameTakenError",
    "ValidationError",
]


class RpcError(RondevuError):
    """The server reported that call ``method`` failed; ``str(err)`` is its error text."""

    def __init__(self, method: Method, message: str) -> None:
        super().__init__(message)
        self.method = method
        """The RPC that failed."""
        self.message = message
        """The server's ``error`` text, exactly as sent."""

    @property
    def kind(self) -> ErrorKind:
        """Temporary, permanent, or a refusal of our identity (`rondevu_core.rules.error_kinds`)."""
        return classify(self.message)

    @property
    def permanent(self) -> bool:
        """True when repeating the same call cannot succeed: do not retry it."""
        return self.kind.permanent


class UsernameTakenError(RpcError):
    """The server refused a call because ``username`` belongs to another key.

    Server 0.5.4 says only ``Invalid signature``; the client raises this once ``getUser``
    confirms that the name is held by a key other than ours."""

    def __init__(self, method: Method, message: str, username: str) -> None:
        super().__init__(method, message)
        self.username = username
        """The name that is taken."""

    def __str__(self) -> str:
        return (
            f"username {self.username!r} is taken by another key (the server said: "
            f"{self.message}); pick another name, or use the key that claimed it"
        )


class TransportError(RondevuError):
    """The call got no usable server answer (network, HTTP status, malformed reply)."""


class ClientClosedError(TransportError):
    """The client was closed before the call had an answer (or the call came after)."""
