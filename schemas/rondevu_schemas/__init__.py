"""Pydantic v2 models of the Rondevu 0.5.4 wire format (docs/protocol.md §2-§10).

The models describe exactly what crosses the wire; the core (`rondevu_core`) works on its
own small types.  Every model derives from `WireModel` (JSON objects) or `WireRootModel`
(arrays and unions of shapes) and has:

- ``Model.from_wire(data)``: validate a decoded JSON value by its camelCase wire names;
- ``model.to_wire()``: the JSON value to send, with only the fields that were set, in
  the original's key order; ``model.to_json()`` is the same as compact JSON text.

Python code constructs models by snake_case names: ``PollParams(since=0)``.

Modules:
- `envelope`: the call object, the success and failure replies, batches (§3).
- `http`: the bodies of ``GET /``, ``GET /health``, the 404 and the three 400s (§2).
- `methods`: params and result of the nine RPC methods and the `METHODS` registry (§7).
- `export`: ``python -m rondevu_schemas.export [--check]`` writes (or checks) the JSON
  Schema of every model under ``schemas/json/``.

The models check shapes and the spec's limits; they do not produce the server's exact
error texts or apply its check order, and they do not clamp numbers.  A server runs its
ordered checks on the raw JSON first (see `rondevu_schemas.methods`), and never puts a
`pydantic.ValidationError`'s text on the wire: it quotes the input back.

Building a reply from values the server already trusts (its own storage rows) may skip
validation with ``Model.model_construct(**fields)``; `to_wire` still sends only the
fields given.  ``ok(result)`` wraps a result model (or dict) in the success reply.
"""

from rondevu_schemas._base import WireModel, WireRootModel
from rondevu_schemas.envelope import (
    MAX_BATCH_SIZE,
    RpcBatch,
    RpcBatchResponse,
    RpcCall,
    RpcFailure,
    RpcReply,
    RpcRequestBody,
    RpcResponseBody,
    RpcSuccess,
    fail,
    ok,
)
from rondevu_schemas.http import (
    BATCH_TOO_LARGE_ERROR,
    EMPTY_BATCH_ERROR,
    INVALID_REQUEST_FORMAT_ERROR,
    NOT_FOUND_ERROR,
    BatchTooLargeBody,
    EmptyBatchBody,
    HealthStatus,
    InvalidRequestBody,
    LongPollExtension,
    NotFoundBody,
    ServerExtensions,
    ServerInfo,
    StateExtension,
)
from rondevu_schemas.methods import (
    MAX_ANSWER_SDP_LENGTH,
    MAX_OFFERS_PER_REQUEST,
    METHODS,
    AddIceCandidatesParams,
    AddIceCandidatesResult,
    AnswerOfferParams,
    AnswerOfferResult,
    DeleteServiceParams,
    DeleteServiceResult,
    GetIceCandidatesParams,
    GetIceCandidatesResult,
    GetOfferAnswerParams,
    GetOfferAnswerResult,
    GetServiceParams,
    GetServiceResult,
    GetUserParams,
    GetUserResult,
    IceCandidateItem,
    IceCandidateRow,
    MethodSchema,
    OfferSdp,
    PollAnswer,
    PollParams,
    PollResult,
    PublishedOffer,
    PublishServiceParams,
    PublishServiceResult,
    ServiceEntry,
    ServicePage,
)

__all__ = [
    "BATCH_TOO_LARGE_ERROR",
    "EMPTY_BATCH_ERROR",
    "INVALID_REQUEST_FORMAT_ERROR",
    "MAX_ANSWER_SDP_LENGTH",
    "MAX_BATCH_SIZE",
    "MAX_OFFERS_PER_REQUEST",
    "METHODS",
    "NOT_FOUND_ERROR",
    "AddIceCandidatesParams",
    "AddIceCandidatesResult",
    "AnswerOfferParams",
    "AnswerOfferResult",
    "BatchTooLargeBody",
    "DeleteServiceParams",
    "DeleteServiceResult",
    "EmptyBatchBody",
    "GetIceCandidatesParams",
    "GetIceCandidatesResult",
    "GetOfferAnswerParams",
    "GetOfferAnswerResult",
    "GetServiceParams",
    "GetServiceResult",
    "GetUserParams",
    "GetUserResult",
    "HealthStatus",
    "IceCandidateItem",
    "IceCandidateRow",
    "InvalidRequestBody",
    "LongPollExtension",
    "MethodSchema",
    "NotFoundBody",
    "OfferSdp",
    "PollAnswer",
    "PollParams",
    "PollResult",
    "PublishServiceParams",
    "PublishServiceResult",
    "PublishedOffer",
    "RpcBatch",
    "RpcBatchResponse",
    "RpcCall",
    "RpcFailure",
    "RpcReply",
    "RpcRequestBody",
    "RpcResponseBody",
    "RpcSuccess",
    "ServerExtensions",
    "ServerInfo",
    "ServiceEntry",
    "ServicePage",
    "StateExtension",
    "WireModel",
    "WireRootModel",
    "fail",
    "ok",
]
