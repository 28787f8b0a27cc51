"""Which failed calls are worth retrying: the one rule every machine and driver shares.

0.5.4 has no error codes, only texts, so the kind of a failure is read from its text.
Three kinds:

- `ErrorKind.TEMPORARY`: the same call may succeed later without anyone changing it.
  Transport failures, rate limits, a full server, an internal error, ``Service not
  found`` and ``no available offers`` (a publisher may come back), an offer answered
  or deleted meanwhile (fetch another), an offer whose SDP is already stored (it goes
  when that offer expires), and **every text this table does not know**:
  an unknown failure is retried, because giving up on a server that was only having a
  bad moment is worse than retrying a hopeless call with backoff.
- `ErrorKind.PERMANENT`: the call itself is wrong (a malformed service name or
  parameter, a method the server does not know, a bad envelope), so repeating it
  can only fail the same way.
- `ErrorKind.IDENTITY`: the server refuses our username + key pair.  0.5.4 answers a
  call signed by a key other than the one holding the name with a bare ``Invalid
  signature``; a driver confirms with ``getUser`` before telling the user the name is
  taken.  Permanent too: retrying with the same identity cannot succeed.

The texts are matched by prefix, since several carry a variable tail (``Unknown
method: x``, ``Invalid offer at index 3: ...``).
"""

from __future__ import annotations

from enum import Enum

from rondevu_core.rpc import RpcFailed, RpcOutcome

__all__ = ["IDENTITY_PREFIXES", "PERMANENT_PREFIXES", "ErrorKind", "classify", "is_permanent"]


class ErrorKind(Enum):
    """How a failed call should be treated; see the module docstring."""

    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    IDENTITY = "identity"

    @property
    def permanent(self) -> bool:
        """True when retrying the same call cannot help."""
        return self is not ErrorKind.TEMPORARY


IDENTITY_PREFIXES: tuple[str, ...] = (
    "Invalid signature",  # also "Invalid signature for auto-claim"
    "Username already claimed by different public key",
    "This public key has already claimed a different username",
)
"""Texts with which a server refuses the identity a call is signed with."""

PERMANENT_PREFIXES: tuple[str, ...] = (
    # The envelope and the method.
    "Unknown method",
    "Missing or invalid method",
    "Missing or invalid message",
    "Missing or invalid signature",
    "Invalid message format",
    "Signed message does not match this call",
    "Username required",
    "Username must be",
    # Service names (the rules of `rondevu_core.rules.fqn`).
    "Service FQN",
    "Service name must be",
    "Version must be",
    "serviceFqn cannot be empty",
    "Either serviceFqn or service must be provided",
    # Parameters.
    "Must provide at least one offer",
    "Too many offers (max",
    "Invalid offer at index",
    "Invalid SDP",
    "SDP too large",
    "Missing or invalid required parameter",
    "Invalid candidate at index",
    "Too many candidates in one request",
    "Invalid waitMs",
    "Request body too large",
)
"""Texts of calls that are wrong in themselves (matched by prefix)."""


def classify(error: str) -> ErrorKind:
    """The kind of a failure whose text is ``error`` (a server's ``error`` field)."""
    if error.startswith(IDENTITY_PREFIXES):
        return ErrorKind.IDENTITY
    if error.startswith(PERMANENT_PREFIXES):
        return ErrorKind.PERMANENT
    return ErrorKind.TEMPORARY


def is_permanent(outcome: RpcOutcome) -> bool:
    """True when ``outcome`` is a server-reported failure that a retry cannot fix.

    A transport failure is always temporary, whatever its text says: no server answered.
    """
    return (
        isinstance(outcome, RpcFailed)
        and not outcome.transport
        and classify(outcome.error).permanent
    )
