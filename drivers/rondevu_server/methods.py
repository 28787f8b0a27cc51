"""The nine RPC methods of server 0.5.4 (docs/protocol.md §7), with their ordered checks.

Each handler validates its params in the original's order, so the first failing rule
gives the same error text, then asks `Storage` for one atomic unit of work and shapes the
result exactly as §7 shows it (key order included).  Handlers never read a clock: ``now``
comes from the server with the call.

Our bounds (config) are checked right after the original's own checks for the same
parameter, so an honest call sees the original's behaviour and only an oversized one
meets a new error.

Long polling (our extension, `rondevu_server.longpoll`): ``poll`` and
``getIceCandidates`` with ``waitMs`` return a `Wait` instead of their result, which the
server holds; without it they read and answer as before.  The two writes that can give
a held call news (answerOffer, addIceCandidates) wake the keys their storage returns;
publishService and deleteService end the caller's held polls (its offers changed).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from rondevu_core.errors import ValidationError
from rondevu_core.rules.fqn import parse_service_fqn, validate_service_fqn
from rondevu_core.rules.offer_id import offer_id_for_sdp
from rondevu_core.rules.server_params import (
    clamp_page,
    clamp_ttl,
    coerce_since,
    json_depth,
)
from rondevu_core.rules.usernames import is_valid_username, js_length
from rondevu_server import messages
from rondevu_server.auth import Authenticator, Call
from rondevu_server.config import ServerConfig
from rondevu_server.jsonwire import RawJson, dumps
from rondevu_server.longpoll import Wait, WaitRegistry, end_key, ice_key, poll_key
from rondevu_server.storage import AnswerRecord, IceRecord, Rejected, ServiceOffer, Storage

__all__ = ["METHODS", "Context", "Handler"]

_OFFER_ID_LENGTH = 64
_HEX = frozenset("0123456789abcdef")


class Context:
    """What a handler may use: settings, storage, authentication, offer capacity, and
    the registry of held calls (to wake)."""

    def __init__(
        self,
        *,
        config: ServerConfig,
        storage: Storage,
        auth: Authenticator,
        waits: WaitRegistry,
        new_service_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.config = config
        self.storage = storage
        self.auth = auth
        self.waits = waits
        self.new_service_id = new_service_id
        self._live_offers = 0
        self._live_offers_at: int | None = None

    async def check_capacity(self, count: int, now: int) -> None:
        """Refuse a publish that would push the deployment past ``max_total_offers``.

        The live count is re-read at most once a second and bumped locally by each
        publish in between (`count_published`); it is an admission bound, so being a
        second stale (or unaware of other processes for that second) is fine.
        """
        if self._live_offers_at is None or now - self._live_offers_at >= 1000:
            self._live_offers = await self.storage.count_live_offers(now)
            self._live_offers_at = now
        if self._live_offers + count > self.config.max_total_offers:
            raise Rejected(messages.TOTAL_OFFER_LIMIT)

    def count_published(self, count: int) -> None:
        """Note ``count`` offers stored since the last `check_capacity` re-read."""
        self._live_offers += count


Handler = Callable[[Context, Call, int], Awaitable[Any]]


def _js_length(text: str) -> int:
    """`js_length` with a fast path: SDPs are ASCII, where UTF-16 units = characters."""
    return len(text) if text.isascii() else js_length(text)


def _offer_id(params: Mapping[str, Any]) -> str | None:
    """The offerId param when it can name an offer at all (64 lowercase hex digits)."""
    value = params.get("offerId")
    if isinstance(value, str) and len(value) == _OFFER_ID_LENGTH and _HEX.issuperset(value):
        return value
    return None


def _service_entry(found: ServiceOffer) -> dict[str, Any]:
    return {
        "serviceId": found.service_id,
        "username": found.username,
        "serviceFqn": found.service_fqn,
        "offerId": found.offer_id,
        "sdp": found.sdp,
        "createdAt": found.created_at,
        "expiresAt": found.expires_at,
    }


async def get_user(ctx: Context, call: Call, now: int) -> Any:
    """§7.1: is a username claimed?  No authentication, no validation of the name."""
    result: dict[str, Any] = {}
    name = call.params.get("username")
    if "username" in call.params and not isinstance(name, list | dict):
        # Echoed as sent, like the original - but only a JSON scalar: an array or object
        # is no name, and echoing one 1000 levels deep would not even encode.
        result["username"] = name
    record = None
    if isinstance(name, str) and is_valid_username(name):
        record = await ctx.storage.get_user(name, now)
    if record is None:
        result["available"] = True
        return result
    result.update(
        available=False,
        claimedAt=record.claimed_at,
        expiresAt=record.expires_at,
        publicKey=record.public_key,
    )
    return result


def _check_offers(ctx: Context, offers: Any) -> list[tuple[str, str]]:
    config = ctx.config
    if not isinstance(offers, list) or not offers:
        raise ValidationError(messages.NO_OFFERS)
    if len(offers) > config.max_offers_per_request:
        raise ValidationError(messages.TOO_MANY_OFFERS.format(limit=config.max_offers_per_request))
    checked: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, offer in enumerate(offers):
        if not isinstance(offer, dict | list):
            raise ValidationError(messages.OFFER_NOT_OBJECT.format(index=index))
        sdp = offer.get("sdp") if isinstance(offer, dict) else None
        if not isinstance(sdp, str) or not sdp or "\x00" in sdp:
            raise ValidationError(messages.OFFER_BAD_SDP.format(index=index))
        if not sdp.strip():
            raise ValidationError(messages.OFFER_EMPTY_SDP.format(index=index))
        if _js_length(sdp) > config.max_sdp_chars:
            raise ValidationError(
                messages.OFFER_SDP_TOO_LARGE.format(index=index, limit=config.max_sdp_chars)
            )
        offer_id = offer_id_for_sdp(sdp)
        if offer_id in seen:
            raise ValidationError(messages.OFFER_DUPLICATE_SDP.format(index=index))
        seen.add(offer_id)
        checked.append((offer_id, sdp))
    return checked


async def publish_service(ctx: Context, call: Call, now: int) -> Any:
    """§7.2: replace the caller's service by a new one with these offers, atomically."""
    username = await ctx.auth.authenticate(call, now)
    fqn = validate_service_fqn(call.params.get("serviceFqn"))
    if fqn.username is None:
        raise ValidationError(messages.FQN_NEEDS_USERNAME)
    if fqn.username != username:
        raise ValidationError(messages.FQN_USERNAME_MISMATCH)
    offers = _check_offers(ctx, call.params.get("offers"))
    config = ctx.config
    ttl = clamp_ttl(
        call.params.get("ttl"),
        default=config.offer_default_ttl,
        minimum=config.offer_min_ttl,
        maximum=config.offer_max_ttl,
    )
    await ctx.check_capacity(len(offers), now)
    published = await ctx.storage.publish_service(
        fqn=fqn,
        service_id=ctx.new_service_id(),
        offers=offers,
        now=now,
        expires_at=now + ttl,
        max_offers_per_user=config.max_offers_per_user,
    )
    ctx.count_published(len(offers))
    ctx.waits.wake([end_key(poll_key(username))])  # see `rondevu_server.longpoll`
    return {
        "serviceId": published.service_id,
        "username": published.username,
        "serviceFqn": published.service_fqn,
        "offers": [
            {
                "offerId": offer.offer_id,
                "sdp": offer.sdp,
                "createdAt": offer.created_at,
                "expiresAt": offer.expires_at,
            }
            for offer in published.offers
        ],
        "createdAt": published.created_at,
        "expiresAt": published.expires_at,
        # Our extension, after the original's keys (clients of 0.18.x ignore it): a
        # republish keeps answered offers, so a pool may refill mid-handshake (B8).
        "keepsAnsweredOffers": True,
    }


async def get_service(ctx: Context, call: Call, now: int) -> Any:
    """§7.3: paginated (``limit`` given), direct (``@user``) or random discovery."""
    if ":" in call.message:  # the original authenticates only then (S13, kept)
        await ctx.auth.authenticate(call, now)
    fqn = validate_service_fqn(call.params.get("serviceFqn"))
    if "limit" in call.params:
        limit, offset = clamp_page(call.params.get("limit"), call.params.get("offset"))
        found = await ctx.storage.list_services(fqn.service, fqn.version, limit, offset, now)
        services = [_service_entry(entry) for entry in found]
        return {"services": services, "count": len(services), "limit": limit, "offset": offset}
    if fqn.username is not None:
        return _service_entry(await ctx.storage.find_service(fqn, now))
    return _service_entry(await ctx.storage.find_random_service(fqn.service, fqn.version, now))


async def delete_service(ctx: Context, call: Call, now: int) -> Any:
    """§7.4: delete one of the caller's services with its offers and candidates."""
    username = await ctx.auth.authenticate(call, now)
    value = call.params.get("serviceFqn")
    fqn = parse_service_fqn(value) if isinstance(value, str) else None
    if fqn is None or fqn.username is None:
        raise ValidationError(messages.FQN_NEEDS_USERNAME)
    try:
        validate_service_fqn(value)
    except ValidationError:  # no such service can exist; never send it to the database
        raise ValidationError(messages.SERVICE_NOT_FOUND) from None
    await ctx.storage.delete_service(fqn, username, now)
    ctx.waits.wake([end_key(poll_key(username))])  # see `rondevu_server.longpoll`
    return {"success": True}


async def answer_offer(ctx: Context, call: Call, now: int) -> Any:
    """§7.5: record the caller's answer; a caller that loses the race is told so (S3)."""
    username = await ctx.auth.authenticate(call, now)
    sdp = call.params.get("sdp")
    if not isinstance(sdp, str) or not sdp or "\x00" in sdp:
        raise ValidationError(messages.INVALID_SDP)
    if _js_length(sdp) > ctx.config.max_sdp_chars:
        raise ValidationError(messages.SDP_TOO_LARGE)
    offer_id = _offer_id(call.params)
    if offer_id is None:
        raise ValidationError(messages.OFFER_NOT_FOUND)
    ctx.waits.wake(await ctx.storage.answer_offer(offer_id, username, sdp, now))
    return {"success": True, "offerId": offer_id}


async def get_offer_answer(ctx: Context, call: Call, now: int) -> Any:
    """§7.6: the answer to one of the caller's offers."""
    username = await ctx.auth.authenticate(call, now)
    offer_id = _offer_id(call.params)
    offer = await ctx.storage.get_offer(offer_id, now) if offer_id else None
    if offer is None:
        raise ValidationError(messages.OFFER_NOT_FOUND)
    if offer.username != username:
        raise ValidationError(messages.NOT_AUTHORIZED_OFFER)
    if offer.answer_sdp is None or offer.answerer_username is None:
        raise ValidationError(messages.OFFER_NOT_ANSWERED)
    return {
        "sdp": offer.answer_sdp,
        "offerId": offer.offer_id,
        "answererId": offer.answerer_username,
        "answeredAt": offer.answered_at,
    }


def _wait_ms(ctx: Context, params: Mapping[str, Any]) -> int:
    """The ``waitMs`` param (our extension) in ms, capped at ``long_poll_max_wait_ms``;
    0 when absent, null, or the extension is off (then it is ignored, like any param the
    0.5.4 server does not know)."""
    limit = ctx.config.long_poll_max_wait_ms
    value = params.get("waitMs")
    if limit <= 0 or value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 2e3: JSON has one number type
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(messages.INVALID_WAIT_MS.format(limit=limit))
    return min(value, limit)


async def poll(ctx: Context, call: Call, now: int) -> Any:
    """§7.7: answers to the caller's offers and their answerers' candidates."""
    username = await ctx.auth.authenticate(call, now)
    since = coerce_since(call.params.get("since"))
    wait_ms = _wait_ms(ctx, call.params)

    async def read(now: int) -> tuple[bool, Any]:
        answers, candidates = await ctx.storage.poll(username, since, now)
        return bool(answers or candidates), _poll_result(answers, candidates)

    if wait_ms > 0:
        return Wait(key=poll_key(username), user=username, wait_ms=wait_ms, read=read)
    return (await read(now))[1]


def _poll_result(answers: Sequence[AnswerRecord], candidates: Sequence[IceRecord]) -> Any:
    by_offer: dict[str, list[dict[str, Any]]] = {}
    for item in candidates:
        by_offer.setdefault(item.offer_id, []).append(
            {
                "id": item.id,
                "offerId": item.offer_id,
                "username": item.username,
                "role": item.role,
                "candidate": RawJson(item.candidate),
                "createdAt": item.created_at,
            }
        )
    return {
        "answers": [
            {
                "offerId": answer.offer_id,
                "serviceId": answer.service_id,
                "answererId": answer.answerer_username,
                "sdp": answer.sdp,
                "answeredAt": answer.answered_at,
            }
            for answer in answers
        ],
        "iceCandidates": by_offer,
    }


def _check_candidates(ctx: Context, candidates: Any) -> list[str]:
    config = ctx.config
    if not isinstance(candidates, list) or not candidates:
        raise ValidationError(messages.CANDIDATES_REQUIRED)
    if len(candidates) > config.max_candidates_per_request:
        raise ValidationError(
            messages.TOO_MANY_CANDIDATES.format(limit=config.max_candidates_per_request)
        )
    texts: list[str] = []
    for index, candidate in enumerate(candidates):
        if not isinstance(candidate, dict | list):
            raise ValidationError(messages.CANDIDATE_NOT_OBJECT.format(index=index))
        if json_depth(candidate, config.max_candidate_depth) > config.max_candidate_depth:
            raise ValidationError(
                messages.CANDIDATE_TOO_DEEP.format(index=index, limit=config.max_candidate_depth)
            )
        data = dumps(candidate)
        if len(data) > config.max_candidate_bytes:
            raise ValidationError(
                messages.CANDIDATE_TOO_LARGE.format(index=index, limit=config.max_candidate_bytes)
            )
        texts.append(data.decode("utf-8"))
    return texts


async def add_ice_candidates(ctx: Context, call: Call, now: int) -> Any:
    """§7.8: store candidates; the role follows from who the caller is (S4)."""
    username = await ctx.auth.authenticate(call, now)
    texts = _check_candidates(ctx, call.params.get("candidates"))
    offer_id = _offer_id(call.params)
    if offer_id is None:
        raise ValidationError(messages.OFFER_NOT_FOUND)
    woken = await ctx.storage.add_ice_candidates(
        offer_id, username, texts, now, ctx.config.max_candidates_per_offer
    )
    ctx.waits.wake(woken)
    return {"count": len(texts), "offerId": offer_id}


async def get_ice_candidates(ctx: Context, call: Call, now: int) -> Any:
    """§7.9: the other participant's candidates after ``since``; nothing for outsiders."""
    username = await ctx.auth.authenticate(call, now)
    offer_id = _offer_id(call.params)
    if offer_id is None:
        raise ValidationError(messages.OFFER_NOT_FOUND)
    since = coerce_since(call.params.get("since"))
    wait_ms = _wait_ms(ctx, call.params)

    async def read(now: int) -> tuple[bool, Any]:
        rows = await ctx.storage.get_ice_candidates(offer_id, username, since, now)
        return bool(rows), {
            "candidates": [{"candidate": RawJson(text), "createdAt": at} for text, at in rows],
            "offerId": offer_id,
        }

    if wait_ms > 0:
        key = ice_key(offer_id, username)
        return Wait(key=key, user=username, wait_ms=wait_ms, read=read)
    return (await read(now))[1]


METHODS: Mapping[str, Handler] = {
    "getUser": get_user,
    "publishService": publish_service,
    "getService": get_service,
    "deleteService": delete_service,
    "answerOffer": answer_offer,
    "getOfferAnswer": get_offer_answer,
    "poll": poll,
    "addIceCandidates": add_ice_candidates,
    "getIceCandidates": get_ice_candidates,
}
"""Method name -> handler; any other name is ``Unknown method: <name>``."""
