"""The RPC envelope of ``POST /rpc`` (docs/protocol.md §3): calls, replies, batches.

A body is one call object or an array of 1 to `MAX_BATCH_SIZE` of them; the reply has
the same shape, the same length and the same order.  Each reply is
``{"success":true,"result":…}`` or ``{"success":false,"error":"…"}``.  This is not
JSON-RPC: there are no ids, and replies match calls by position.

These models describe *well-formed* bodies, which is what a client builds and parses.  A
server must not validate a whole batch with `RpcRequestBody`: the original answers every
malformed item of a batch with its own error (``Missing or invalid method`` and so on,
checked in the spec's order), so the server walks the raw array itself and may then use
`RpcCall` per item.  The envelope's three 400 bodies live in `rondevu_schemas.http`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import Field

from rondevu_core.rpc import Method
from rondevu_schemas._base import NonEmptyStr, WireModel, WireRootModel

__all__ = [
    "MAX_BATCH_SIZE",
    "RpcBatch",
    "RpcBatchResponse",
    "RpcCall",
    "RpcFailure",
    "RpcReply",
    "RpcRequestBody",
    "RpcResponseBody",
    "RpcSuccess",
    "fail",
    "ok",
]

MAX_BATCH_SIZE: Final = 100
"""Most calls one HTTP request may carry (``MAX_BATCH_SIZE`` in the original's app.ts)."""


class RpcCall(WireModel):
    """One call object of a request body (§3).

    ``message`` and ``signature`` are required by every method, even the unauthenticated
    ``getUser``.  ``params`` stays a plain dict here: its shape depends on ``method``, and
    `rondevu_schemas.methods.METHODS` gives the model to validate it with.
    """

    method: NonEmptyStr
    """The RPC method name; an unknown one fails with ``Unknown method: <method>``."""
    message: NonEmptyStr
    """The signed text ``{method}:{username}[:{context}]:{ts}`` (§4)."""
    signature: NonEmptyStr
    """Standard base64 of the 64-byte Ed25519 signature over ``message``'s UTF-8 bytes."""
    public_key: str | None = None
    """Standard base64 of the caller's 32-byte Ed25519 public key; used only to auto-claim
    an unclaimed username (§5)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The method's parameters; ``{}`` when absent."""

    @property
    def known_method(self) -> Method | None:
        """``method`` as a `Method` of server 0.5.4, or None for an unknown name."""
        try:
            return Method(self.method)
        except ValueError:
            return None


CallList = Annotated[list[RpcCall], Field(min_length=1, max_length=MAX_BATCH_SIZE)]


class RpcBatch(WireRootModel[CallList]):
    """A batch request: an array of 1 to 100 calls, run in order, each independently."""


class RpcRequestBody(WireRootModel[RpcCall | CallList]):
    """A whole ``POST /rpc`` body: one call object or a batch of 1 to 100."""


class RpcSuccess(WireModel):
    """The reply to a call that succeeded."""

    success: Literal[True]
    """Always ``true``."""
    result: Any
    """The method's result object (see `rondevu_schemas.methods.METHODS`)."""


class RpcFailure(WireModel):
    """The reply to a call that failed.

    There are no error codes at 0.5.4: ``error`` is a human-readable text (the exact texts
    are in docs/protocol.md) and clients match on substrings, e.g. ``not yet answered``.
    """

    success: Literal[False]
    """Always ``false``."""
    error: str
    """What went wrong."""


RpcReply = RpcSuccess | RpcFailure
"""One reply, in a single-call response or as an element of a batch response."""

ReplyList = Annotated[list[RpcReply], Field(min_length=1, max_length=MAX_BATCH_SIZE)]


class RpcBatchResponse(WireRootModel[ReplyList]):
    """The reply to a batch: one reply per call, in the calls' order."""


class RpcResponseBody(WireRootModel[RpcReply | ReplyList]):
    """A whole HTTP 200 reply of ``POST /rpc``: one reply, or a batch of them."""


def ok(result: Any) -> RpcSuccess:
    """The success reply carrying ``result`` (a dict or a result model)."""
    return RpcSuccess(success=True, result=result)


def fail(error: str) -> RpcFailure:
    """The failure reply carrying the error text ``error``."""
    return RpcFailure(success=False, error=error)
