"""Params and result of each of the nine RPC methods of server 0.5.4 (docs/protocol.md §7).

`METHODS` maps a method name to its `MethodSchema` (params model, result model).  A
params model describes what the original accepts once its own checks have passed; a
result model describes exactly what it sends back, key order included.

What the models do **not** do, on purpose:

- Produce the server's error texts or apply its check order.  Pydantic reports every
  problem at once in its own words; the server runs the spec's ordered checks on the raw
  params first (auth comes before any param check, for a start) and uses these models
  for shapes and for building replies.
- Clamp numbers.  ``ttl``, ``limit`` and ``offset`` are any integers here; clamping them
  (TTL to [60000, 86400000], limit to [1, 100], offset to >= 0) is the server's rule.
- Decide by value what the original decides by presence.  ``getService`` is paginated
  whenever ``limit`` is *present*, even ``null`` (see `GetServiceParams.paginated`), and
  ``publishService`` clamps a present ``ttl`` even when it is ``null``.  Such optional
  fields are ``None`` both when absent and when ``null``; ``model_fields_set`` tells them
  apart, and `WireModel.to_wire` keeps the difference.
- Look inside ICE candidates: they are opaque JSON objects (or arrays), relayed as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, Self

from pydantic import AfterValidator, ConfigDict, Field, WithJsonSchema, model_validator

from rondevu_core.rpc import Method
from rondevu_core.rules.fqn import parse_service_fqn
from rondevu_core.rules.usernames import js_length, validate_username
from rondevu_schemas._base import (
    IceCandidate,
    NonEmptyStr,
    OfferId,
    OwnedServiceFqnStr,
    ServiceFqnStr,
    ServiceId,
    Timestamp,
    UsernameStr,
    WireModel,
    WireRootModel,
)

__all__ = [
    "MAX_ANSWER_SDP_LENGTH",
    "MAX_OFFERS_PER_REQUEST",
    "METHODS",
    "AddIceCandidatesParams",
    "AddIceCandidatesResult",
    "AnswerOfferParams",
    "AnswerOfferResult",
    "DeleteServiceParams",
    "DeleteServiceResult",
    "GetIceCandidatesParams",
    "GetIceCandidatesResult",
    "GetOfferAnswerParams",
    "GetOfferAnswerResult",
    "GetServiceParams",
    "GetServiceResult",
    "GetUserParams",
    "GetUserResult",
    "IceCandidateItem",
    "IceCandidateRow",
    "MethodSchema",
    "OfferSdp",
    "PollAnswer",
    "PollParams",
    "PollResult",
    "PublishServiceParams",
    "PublishServiceResult",
    "PublishedOffer",
    "ServiceEntry",
    "ServicePage",
]

MAX_OFFERS_PER_REQUEST: Final = 100
"""Most offers one ``publishService`` call may carry (§7.2)."""

MAX_ANSWER_SDP_LENGTH: Final = 65536
"""Longest answer SDP, in JavaScript string length (UTF-16 code units) (§7.5)."""

# JavaScript's String.prototype.trim() removes exactly these (WhiteSpace and
# LineTerminator); Python's str.strip() would also remove \x1c-\x1f and \x85.
_JS_WHITESPACE: Final = (
    " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def _offer_sdp(value: str) -> str:
    if not value.strip(_JS_WHITESPACE):
        raise ValueError("SDP cannot be empty")
    return value


def _answer_sdp(value: str) -> str:
    if js_length(value) > MAX_ANSWER_SDP_LENGTH:
        raise ValueError("SDP too large (max 64KB)")
    return value


def _fqn_with_username(value: str) -> str:
    fqn = parse_service_fqn(value)
    if fqn is None or fqn.username is None:
        raise ValueError("Service FQN must include username")
    return value


# --- getUser (§7.1, §5) -----------------------------------------------------------


class GetUserParams(WireModel):
    """``getUser``: is a username claimed?  No auth; the name is not validated."""

    username: Any = None
    """The name to look up.  Any JSON value: the original echoes back whatever it got."""


_CLAIM_FIELDS: Final = frozenset({"claimed_at", "expires_at", "public_key"})


def _claim_fields_not_null(schema: dict[str, Any]) -> None:
    """JSON Schema of `GetUserResult`: the claim fields are omitted, never ``null``."""
    for name in ("claimedAt", "expiresAt", "publicKey"):
        prop = schema["properties"][name]
        prop.pop("default", None)
        prop.update(next(s for s in prop.pop("anyOf") if s.get("type") != "null"))


class GetUserResult(WireModel):
    """``getUser``'s result: ``{"username","available":true}`` or the claimed record.

    An unclaimed name echoes ``username`` unchanged (absent when the params had none); a
    claimed one carries all three of ``claimedAt``, ``expiresAt`` and ``publicKey``, which
    are otherwise absent (never ``null``).
    """

    model_config = ConfigDict(json_schema_extra=_claim_fields_not_null)

    username: Any = None
    """The name looked up; a valid username when ``available`` is false."""
    available: bool
    claimed_at: Timestamp | None = None
    """When the name was (last) claimed; claimed names only."""
    expires_at: Timestamp | None = None
    """When the claim lapses unless renewed by ``publishService``; claimed names only."""
    public_key: NonEmptyStr | None = None
    """The owner's public key, exactly as it was claimed with; claimed names only."""

    @model_validator(mode="after")
    def _claim_fields(self) -> Self:
        if self.available:
            if self.model_fields_set & _CLAIM_FIELDS:
                raise ValueError("an available username has no claimedAt, expiresAt, publicKey")
        elif None in (self.claimed_at, self.expires_at, self.public_key):
            raise ValueError("a claimed username has claimedAt, expiresAt and publicKey")
        elif not isinstance(self.username, str):
            raise ValueError("a claimed username has a username")
        else:
            validate_username(self.username)
        return self


# --- publishService (§7.2) --------------------------------------------------------


class OfferSdp(WireModel):
    """One offer of a ``publishService`` call.  There is no size limit on offer SDPs."""

    sdp: Annotated[NonEmptyStr, AfterValidator(_offer_sdp)]
    """The offer SDP; not empty and not only whitespace."""


class PublishServiceParams(WireModel):
    """``publishService``: create or replace the caller's service with these offers."""

    service_fqn: OwnedServiceFqnStr
    """``service:version@username``; the username must be the caller's (a server check)."""
    offers: Annotated[list[OfferSdp], Field(min_length=1, max_length=MAX_OFFERS_PER_REQUEST)]
    """1 to 100 offers.  Their IDs are derived from their SDPs, so they must differ."""
    ttl: int | None = None
    """Offer lifetime in ms; the server clamps it (default 60000 when absent)."""


class PublishedOffer(WireModel):
    """One offer of a published service, as ``publishService`` reports it."""

    offer_id: OfferId
    sdp: str
    created_at: Timestamp
    """When this offer was stored; can be a few ms after the service's ``createdAt``."""
    expires_at: Timestamp


def _keeps_answered_offers_not_null(schema: dict[str, Any]) -> None:
    """JSON Schema of `PublishServiceResult`: ``keepsAnsweredOffers`` is omitted, never
    ``null``."""
    prop = schema["properties"]["keepsAnsweredOffers"]
    prop.pop("default", None)
    prop.update(next(s for s in prop.pop("anyOf") if s.get("type") != "null"))


class PublishServiceResult(WireModel):
    """``publishService``'s result: the new service and all of its offers."""

    model_config = ConfigDict(json_schema_extra=_keeps_answered_offers_not_null)

    service_id: ServiceId
    username: UsernameStr
    service_fqn: OwnedServiceFqnStr
    offers: Annotated[list[PublishedOffer], Field(min_length=1, max_length=MAX_OFFERS_PER_REQUEST)]
    created_at: Timestamp
    expires_at: Timestamp
    """Shared by the service and all of its offers: ``now + ttl``."""
    keeps_answered_offers: bool | None = None
    """Our extension, absent from 0.5.4 (whose 0.18.9 client would ignore it as unknown):
    ``true`` when this server's publishService replaces only the service's *unanswered*
    offers and keeps the answered ones with their candidates (B8), so an offer pool may
    republish while a handshake is pending.  Omitted, never ``null``, otherwise."""

    @model_validator(mode="after")
    def _keeps_answered_offers_not_null(self) -> Self:
        if "keeps_answered_offers" in self.model_fields_set and self.keeps_answered_offers is None:
            raise ValueError("keepsAnsweredOffers is a boolean when present, never null")
        return self


# --- getService (§7.3, §7.3) -------------------------------------------------------


class GetServiceParams(WireModel):
    """``getService``: direct lookup, random discovery, or a page of services.

    The mode is chosen by the original in this order: paginated when ``limit`` is present
    (whatever the FQN), direct when the FQN has ``@username``, random otherwise.
    """

    service_fqn: ServiceFqnStr
    limit: int | None = None
    """Page size; its presence selects the paginated mode.  The server clamps it to
    [1, 100]."""
    offset: int | None = None
    """Page start (paginated mode only); the server clamps it to >= 0, default 0."""

    @property
    def paginated(self) -> bool:
        """True when the original would answer with a page: ``limit`` is present."""
        return "limit" in self.model_fields_set


class ServiceEntry(WireModel):
    """A service with its first available offer: the direct and random result, and
    each entry of a page."""

    service_id: ServiceId
    username: UsernameStr
    service_fqn: OwnedServiceFqnStr
    offer_id: OfferId
    sdp: str
    """The offer's SDP."""
    created_at: Timestamp
    """The *service's* creation time."""
    expires_at: Timestamp
    """The *service's* expiry time."""


class ServicePage(WireModel):
    """The paginated ``getService`` result (at most one service per username)."""

    services: list[ServiceEntry]
    count: Annotated[int, Field(ge=0)]
    """How many services this page holds (not a total)."""
    limit: Annotated[int, Field(ge=1, le=100)]
    """The clamped page size."""
    offset: Annotated[int, Field(ge=0)]
    """The clamped page start."""

    @model_validator(mode="after")
    def _count_is_page_length(self) -> Self:
        if self.count != len(self.services) or self.count > self.limit:
            raise ValueError("count must equal the number of services, at most limit")
        return self


class GetServiceResult(WireRootModel[ServiceEntry | ServicePage]):
    """``getService``'s result: a `ServiceEntry` (direct, random) or a `ServicePage`."""


# --- deleteService (§7.4) ---------------------------------------------------------


class DeleteServiceParams(WireModel):
    """``deleteService``: delete the caller's service and its offers.

    The original only parses the FQN here (no character rules) and requires a username.
    """

    service_fqn: Annotated[NonEmptyStr, AfterValidator(_fqn_with_username)]


class DeleteServiceResult(WireModel):
    """``deleteService``'s result: ``{"success":true}``."""

    success: Literal[True]


# --- answerOffer (§7.5) -----------------------------------------------------------


class AnswerOfferParams(WireModel):
    """``answerOffer``: answer an available offer."""

    service_fqn: Any = None
    """Ignored by the server; the 0.18.9 client sends the service's FQN."""
    offer_id: str
    sdp: Annotated[
        NonEmptyStr,
        AfterValidator(_answer_sdp),
        WithJsonSchema(
            {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_ANSWER_SDP_LENGTH,
                "description": "At most 65536 UTF-16 code units (JavaScript length).",
            }
        ),
    ]
    """The answer SDP: not empty, at most 65536 JavaScript characters."""


class AnswerOfferResult(WireModel):
    """``answerOffer``'s result."""

    success: Literal[True]
    offer_id: OfferId


# --- getOfferAnswer (§7.6) --------------------------------------------------------


class GetOfferAnswerParams(WireModel):
    """``getOfferAnswer``: the answer to one of the caller's offers."""

    service_fqn: Any = None
    """Ignored by the server; the 0.18.9 client sends the service's FQN."""
    offer_id: str


class GetOfferAnswerResult(WireModel):
    """``getOfferAnswer``'s result."""

    sdp: str
    """The answer SDP."""
    offer_id: OfferId
    answerer_id: UsernameStr
    """The answerer's username."""
    answered_at: Timestamp


# --- poll (§7.7, §7.7) --------------------------------------------------------------


WaitMs = Annotated[int, Field(ge=0)]
"""Our long-polling extension (docs/long-polling.md): hold the call up to this many ms
until there is news; absent, ``null`` or ``0``: answer at once.  Not signed, like
``since``; a 0.5.4 server ignores it."""


class PollParams(WireModel):
    """``poll``: answers and ICE candidates for the caller's offers since a time."""

    since: int | None = None
    """Only items strictly newer than this server time (ms); absent or ``0`` means all."""
    wait_ms: WaitMs | None = None
    """Ours: wait up to this many ms for news (see `WaitMs`)."""


class PollAnswer(WireModel):
    """An answer to one of the caller's offers."""

    offer_id: OfferId
    service_id: ServiceId
    answerer_id: UsernameStr
    sdp: str
    """The answer SDP."""
    answered_at: Timestamp


class IceCandidateRow(WireModel):
    """A stored ICE candidate as ``poll`` returns it: the full row."""

    id: Annotated[int, Field(ge=1)]
    """The row's autoincrement id."""
    offer_id: OfferId
    username: UsernameStr
    """Who sent the candidate."""
    role: Literal["offerer", "answerer"]
    """The sender's role; always ``answerer`` in ``poll`` at 0.5.4."""
    candidate: IceCandidate
    created_at: Timestamp
    """The server's (synthetic, per-candidate) time: the ``since`` cursor."""


class PollResult(WireModel):
    """``poll``'s result.  Offers without new candidates are left out of the map."""

    answers: list[PollAnswer]
    """Newest first (``answeredAt`` descending)."""
    ice_candidates: dict[OfferId, Annotated[list[IceCandidateRow], Field(min_length=1)]]
    """Offer ID -> candidates from the other side, oldest first."""


# --- addIceCandidates (§7.8) ------------------------------------------------------


class AddIceCandidatesParams(WireModel):
    """``addIceCandidates``: store candidates for an offer.  No limit on count or size."""

    service_fqn: Any = None
    """Ignored by the server; the 0.18.9 client sends the service's FQN."""
    offer_id: str
    candidates: Annotated[list[IceCandidate], Field(min_length=1)]


class AddIceCandidatesResult(WireModel):
    """``addIceCandidates``'s result."""

    count: Annotated[int, Field(ge=1)]
    """How many candidates were stored."""
    offer_id: OfferId


# --- getIceCandidates (§7.9) ------------------------------------------------------


class GetIceCandidatesParams(WireModel):
    """``getIceCandidates``: the other side's candidates for an offer."""

    service_fqn: Any = None
    """Ignored by the server; the 0.18.9 client sends the service's FQN."""
    offer_id: str
    since: int | None = None
    """Only candidates strictly newer than this server time (ms); default 0."""
    wait_ms: WaitMs | None = None
    """Ours: wait up to this many ms for news (see `WaitMs`)."""


class IceCandidateItem(WireModel):
    """A candidate as ``getIceCandidates`` returns it: no ``role``, no sender."""

    candidate: IceCandidate
    created_at: Timestamp


class GetIceCandidatesResult(WireModel):
    """``getIceCandidates``'s result."""

    candidates: list[IceCandidateItem]
    """Oldest first (``createdAt`` ascending)."""
    offer_id: OfferId


# --- the registry -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodSchema:
    """The wire models of one RPC method."""

    method: Method
    params: type[WireModel]
    """Validates ``params`` of a call (after the server's own ordered checks)."""
    result: type[WireModel] | type[WireRootModel[Any]]
    """Validates or builds the ``result`` of a successful reply."""


METHODS: Final[Mapping[str, MethodSchema]] = MappingProxyType(
    {
        schema.method.value: schema
        for schema in (
            MethodSchema(method=Method.GET_USER, params=GetUserParams, result=GetUserResult),
            MethodSchema(
                method=Method.PUBLISH_SERVICE,
                params=PublishServiceParams,
                result=PublishServiceResult,
            ),
            MethodSchema(
                method=Method.GET_SERVICE, params=GetServiceParams, result=GetServiceResult
            ),
            MethodSchema(
                method=Method.DELETE_SERVICE,
                params=DeleteServiceParams,
                result=DeleteServiceResult,
            ),
            MethodSchema(
                method=Method.ANSWER_OFFER, params=AnswerOfferParams, result=AnswerOfferResult
            ),
            MethodSchema(
                method=Method.GET_OFFER_ANSWER,
                params=GetOfferAnswerParams,
                result=GetOfferAnswerResult,
            ),
            MethodSchema(method=Method.POLL, params=PollParams, result=PollResult),
            MethodSchema(
                method=Method.ADD_ICE_CANDIDATES,
                params=AddIceCandidatesParams,
                result=AddIceCandidatesResult,
            ),
            MethodSchema(
                method=Method.GET_ICE_CANDIDATES,
                params=GetIceCandidatesParams,
                result=GetIceCandidatesResult,
            ),
        )
    }
)
"""Method name -> its params and result models, for the nine methods of server 0.5.4."""
