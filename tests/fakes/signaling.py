"""An in-memory fake of the 0.5.4 signaling server's RPC semantics (docs/protocol.md §5-§9).

For the sans-IO core's harness tests only: it answers one `RpcRequest` at a time for a
caller named by ``username`` and a time ``now_ms`` the test chooses.  It checks no
signatures (the caller *is* ``username``) and does no I/O, so a harness can drive a
state machine against it step by step.

What it reproduces: publishService's upsert with the TTL clamp; offer ids from
`offer_id_for_sdp`; getService's paginated / direct / random modes; answerOffer,
getOfferAnswer, poll, add/getIceCandidates with roles by ownership; deleteService;
getUser; expiry filtered on every read; the exact error strings.

``mode`` chooses between our server and 0.5.4 where they differ:

- ICE ``createdAt``: ``"ours"`` keeps it strictly increasing per offer (the
  recommendation of §9), ``"upstream"`` gives ``now + index`` like 0.5.4, which produces
  the collisions of B5.
- publishService: ``"upstream"`` replaces the whole service with its offers and their
  candidates (B8), non-atomically: a duplicate offer id leaves an orphan service behind
  (S5).  ``"ours"`` is atomic and replaces only the *unanswered* (or expired) offers: the
  answered ones stay with their candidates and expiry, the service keeps its row and id
  while it has any, an offer sent again identical to a kept one is reported as stored,
  and the result says so with ``keepsAnsweredOffers: true``.

Test conveniences: `fail_next` injects failures, `offers` / `services` / `candidates`
expose the stored rows, `calls` logs every call and its outcome.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from rondevu_core.errors import ValidationError
from rondevu_core.rpc import Method, RpcFailed, RpcOk, RpcOutcome, RpcRequest
from rondevu_core.rules.fqn import validate_service_fqn
from rondevu_core.rules.offer_id import offer_id_for_sdp
from rondevu_core.rules.usernames import js_length, validate_username

__all__ = ["CallRecord", "FakeCandidate", "FakeOffer", "FakeService", "FakeSignalingServer"]

OFFER_MIN_TTL = 60_000
OFFER_MAX_TTL = 86_400_000
OFFER_DEFAULT_TTL = 60_000
USERNAME_TTL = 365 * 24 * 3600 * 1000
MAX_OFFERS_PER_REQUEST = 100
MAX_ANSWER_SDP = 65_536


class _Failure(Exception):
    """A handler's error; its text goes on the wire as ``{"success":false,"error":…}``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeService:
    """A stored service row."""

    id: str
    fqn: str
    service: str
    version: str
    username: str
    created_at: int
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeOffer:
    """A stored offer row; ``answerer`` is None until answered."""

    id: str
    username: str
    service_id: str
    sdp: str
    created_at: int
    expires_at: int
    answerer: str | None = None
    answer_sdp: str | None = None
    answered_at: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeCandidate:
    """A stored ICE candidate row (``role`` is ``"offerer"`` or ``"answerer"``)."""

    id: int
    offer_id: str
    username: str
    role: str
    candidate: Any
    created_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """One call the fake answered, for assertions on what a machine sent."""

    username: str
    request: RpcRequest
    now_ms: int
    outcome: RpcOutcome


@dataclass(slots=True, kw_only=True)
class _Fault:
    count: int
    error: str
    transport: bool
    execute: bool


@dataclass(slots=True, kw_only=True)
class _User:
    claimed_at: int
    expires_at: int


@dataclass(slots=True)
class _Store:
    users: dict[str, _User] = field(default_factory=dict)
    services: dict[str, FakeService] = field(default_factory=dict)  # by id, insertion order
    offers: dict[str, FakeOffer] = field(default_factory=dict)  # by id, insertion order
    candidates: list[FakeCandidate] = field(default_factory=list)


def fake_public_key(username: str) -> str:
    """The base64 public key `getUser` reports for a claimed ``username``."""
    return base64.b64encode(hashlib.sha256(username.encode()).digest()).decode()


def _number(value: Any) -> float | None:
    """``value`` if it is a JSON number (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


class FakeSignalingServer:
    """The 0.5.4 server's RPC behaviour over in-memory tables (see the module docstring).

    ``rng`` picks random-mode discovery results (seeded by default so runs replay);
    ``service_ids`` makes service ids (UUIDv4 from ``rng`` by default).
    """

    def __init__(
        self,
        *,
        mode: Literal["ours", "upstream"] = "ours",
        rng: random.Random | None = None,
        service_ids: Callable[[], str] | None = None,
    ) -> None:
        self.mode = mode
        self._rng = rng if rng is not None else random.Random(0)
        self._service_ids = service_ids or (
            lambda: str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        )
        self._store = _Store()
        self._faults: dict[Method, _Fault] = {}
        self._next_candidate_id = 1
        self.calls: list[CallRecord] = []
        self._handlers: dict[Method, Callable[[str, Mapping[str, Any], int], Any]] = {
            Method.GET_USER: self._get_user,
            Method.PUBLISH_SERVICE: self._publish_service,
            Method.GET_SERVICE: self._get_service,
            Method.DELETE_SERVICE: self._delete_service,
            Method.ANSWER_OFFER: self._answer_offer,
            Method.GET_OFFER_ANSWER: self._get_offer_answer,
            Method.POLL: self._poll,
            Method.ADD_ICE_CANDIDATES: self._add_ice_candidates,
            Method.GET_ICE_CANDIDATES: self._get_ice_candidates,
        }

    # -- the RPC entry point -------------------------------------------------------------

    def call(self, username: str, request: RpcRequest, now_ms: int) -> RpcOutcome:
        """Answer ``request`` made by ``username`` at ``now_ms``, as the server would."""
        fault = self._faults.get(request.method)
        outcome: RpcOutcome
        if fault is not None and fault.count > 0:
            fault.count -= 1
            if fault.execute:
                self._execute(username, request, now_ms)
            outcome = RpcFailed(error=fault.error, transport=fault.transport)
        else:
            outcome = self._execute(username, request, now_ms)
        self.calls.append(
            CallRecord(username=username, request=request, now_ms=now_ms, outcome=outcome)
        )
        return outcome

    def _execute(self, username: str, request: RpcRequest, now_ms: int) -> RpcOutcome:
        try:
            return RpcOk(result=self._handlers[request.method](username, request.params, now_ms))
        except (_Failure, ValidationError) as error:
            return RpcFailed(error=str(error))

    # -- test conveniences ---------------------------------------------------------------

    def fail_next(
        self,
        method: Method,
        count: int = 1,
        *,
        error: str = "Injected failure",
        transport: bool = True,
        execute: bool = False,
    ) -> None:
        """Fail the next ``count`` calls of ``method`` with ``error``.

        ``execute=True`` still applies the call and only loses its reply (the server did
        the work, the client never heard): the case B9 turns into orphan offers.
        """
        self._faults[method] = _Fault(
            count=count, error=error, transport=transport, execute=execute
        )

    @property
    def offers(self) -> list[FakeOffer]:
        """Every stored offer row (expired ones included), oldest first."""
        return list(self._store.offers.values())

    @property
    def services(self) -> list[FakeService]:
        """Every stored service row (expired ones included), oldest first."""
        return list(self._store.services.values())

    @property
    def candidates(self) -> list[FakeCandidate]:
        """Every stored ICE candidate row, in insertion order."""
        return list(self._store.candidates)

    def offer(self, offer_id: str) -> FakeOffer | None:
        """The stored offer ``offer_id`` (even if expired), or None."""
        return self._store.offers.get(offer_id)

    # -- shared rules --------------------------------------------------------------------

    def _authenticate(self, username: str, now: int, *, missing: str = "Username required") -> None:
        """Auth (§4) without signatures: a valid name, auto-claimed on first use."""
        if not username:
            raise _Failure(missing)
        user = self._store.users.get(username)
        if user is None or user.expires_at <= now:
            validate_username(username)
            self._store.users[username] = _User(claimed_at=now, expires_at=now + USERNAME_TTL)

    def _live_offer(self, offer_id: Any, now: int) -> FakeOffer:
        offer = self._store.offers.get(offer_id) if isinstance(offer_id, str) else None
        if offer is None or offer.expires_at <= now:
            raise _Failure("Offer not found")
        return offer

    def _available_offers(self, service_id: str, now: int) -> list[FakeOffer]:
        """Unanswered, unexpired offers of a service, oldest first."""
        found = [
            o
            for o in self._store.offers.values()
            if o.service_id == service_id and o.answerer is None and o.expires_at > now
        ]
        return sorted(found, key=lambda o: o.created_at)

    def _live_services(self, now: int) -> Iterable[FakeService]:
        return (s for s in self._store.services.values() if s.expires_at > now)

    def _delete_service_rows(self, service_id: str) -> None:
        """Drop a service with its offers and their candidates (ON DELETE CASCADE)."""
        self._store.services.pop(service_id, None)
        self._delete_offer_rows(
            {o.id for o in self._store.offers.values() if o.service_id == service_id}
        )

    def _delete_offer_rows(self, gone: set[str]) -> None:
        """Drop offers and their candidates (ON DELETE CASCADE)."""
        for offer_id in gone:
            del self._store.offers[offer_id]
        self._store.candidates = [c for c in self._store.candidates if c.offer_id not in gone]

    @staticmethod
    def _entry(service: FakeService, offer: FakeOffer) -> dict[str, Any]:
        return {
            "serviceId": service.id,
            "username": service.username,
            "serviceFqn": service.fqn,
            "offerId": offer.id,
            "sdp": offer.sdp,
            "createdAt": service.created_at,
            "expiresAt": service.expires_at,
        }

    # -- handlers (§7) -------------------------------------------------------------------

    def _get_user(self, username: str, params: Mapping[str, Any], now: int) -> Any:
        name = params.get("username")
        if name is None:
            return {"available": True}
        user = self._store.users.get(name) if isinstance(name, str) else None
        if user is None or user.expires_at <= now:
            return {"username": name, "available": True}
        return {
            "username": name,
            "available": False,
            "claimedAt": user.claimed_at,
            "expiresAt": user.expires_at,
            "publicKey": fake_public_key(name),
        }

    def _publish_service(self, username: str, params: Mapping[str, Any], now: int) -> Any:
        self._authenticate(username, now, missing="Username required for service publishing")
        fqn_text = params.get("serviceFqn")
        fqn = validate_service_fqn(fqn_text)
        if fqn.username is None:
            raise _Failure("Service FQN must include username")
        if fqn.username != username:
            raise _Failure("Service FQN username must match authenticated username")
        offers = params.get("offers")
        if not isinstance(offers, list) or not offers:
            raise _Failure("Must provide at least one offer")
        if len(offers) > MAX_OFFERS_PER_REQUEST:
            raise _Failure(f"Too many offers (max {MAX_OFFERS_PER_REQUEST})")
        for i, item in enumerate(offers):
            if not isinstance(item, dict):
                raise _Failure(f"Invalid offer at index {i}: must be an object")
            if not isinstance(item.get("sdp"), str):
                raise _Failure(f"Invalid offer at index {i}: missing or invalid SDP")
            if not item["sdp"].strip():
                raise _Failure(f"Invalid offer at index {i}: SDP cannot be empty")
        ttl = _number(params.get("ttl"))
        ttl = OFFER_DEFAULT_TTL if ttl is None else min(max(ttl, OFFER_MIN_TTL), OFFER_MAX_TTL)
        expires_at = int(now + ttl)
        sdps = [item["sdp"] for item in offers]
        ids = [offer_id_for_sdp(sdp) for sdp in sdps]
        old = next((s for s in self._store.services.values() if s.fqn == str(fqn)), None)
        # 0.5.4 matches the old service by (name, version, username); with a validated FQN
        # that is the same as the FQN string.
        mine = [o for o in self._store.offers.values() if old and o.service_id == old.id]
        kept: dict[str, FakeOffer] = {}
        if self.mode == "ours":  # answered, unexpired offers survive the republish (B8)
            kept = {o.id: o for o in mine if o.answerer is not None and o.expires_at > now}
        replaced = {o.id for o in mine if o.id not in kept}
        fresh = [(i, sdp) for i, sdp in zip(ids, sdps, strict=True) if i not in kept]
        duplicate = len(set(ids)) < len(ids) or any(
            i in self._store.offers and i not in replaced for i, _ in fresh
        )
        if duplicate and self.mode == "ours":
            raise _Failure("UNIQUE constraint failed: offers.id")  # atomic: nothing changed
        self._store.users[username] = _User(
            claimed_at=self._store.users[username].claimed_at, expires_at=now + USERNAME_TTL
        )
        if old is not None and kept:
            self._delete_offer_rows(replaced)
            # The service outlives its kept offers; the new ones get ``now + ttl``.
            latest = max(expires_at, *(o.expires_at for o in kept.values()))
            service = replace(old, created_at=now, expires_at=latest)
        else:
            if old is not None:
                self._delete_service_rows(old.id)
            service = FakeService(
                id=self._service_ids(),
                fqn=str(fqn),
                service=fqn.service,
                version=fqn.version,
                username=username,
                created_at=now,
                expires_at=expires_at,
            )
        self._store.services[service.id] = service
        if duplicate:  # upstream: the service row is committed, the offers are not (S5)
            raise _Failure("UNIQUE constraint failed: offers.id")
        self._store.offers.update(
            (
                offer_id,
                FakeOffer(
                    id=offer_id,
                    username=username,
                    service_id=service.id,
                    sdp=sdp,
                    created_at=now,
                    expires_at=expires_at,
                ),
            )
            for offer_id, sdp in fresh
        )
        rows = [self._store.offers[offer_id] for offer_id in ids]
        result: dict[str, Any] = {
            "serviceId": service.id,
            "username": username,
            "serviceFqn": service.fqn,
            "offers": [
                {
                    "offerId": r.id,
                    "sdp": r.sdp,
                    "createdAt": r.created_at,
                    "expiresAt": r.expires_at,
                }
                for r in rows
            ],
            "createdAt": now,
            "expiresAt": service.expires_at,
        }
        if self.mode == "ours":
            result["keepsAnsweredOffers"] = True
        return result

    def _get_service(self, username: str, params: Mapping[str, Any], now: int) -> Any:
        if username:  # getService authenticates only when the message names a user
            self._authenticate(username, now)
        fqn = validate_service_fqn(params.get("serviceFqn"))
        if "limit" in params:  # paginated, even when the FQN names a user (S12)
            limit = int(min(max(_number(params["limit"]) or 1, 1), 100))
            offset = int(max(_number(params.get("offset")) or 0, 0))
            matching = [
                (s, self._available_offers(s.id, now))
                for s in self._live_services(now)
                if s.service == fqn.service and s.version == fqn.version
            ]
            # Newest first (a stable sort over reversed insertion order puts the newest
            # of equal timestamps first too); only services with a free offer count.
            matching = sorted(reversed(matching), key=lambda pair: -pair[0].created_at)
            entries: list[dict[str, Any]] = []
            seen: set[str] = set()
            for row, available in [pair for pair in matching if pair[1]][:1000]:
                if row.username not in seen:
                    seen.add(row.username)
                    entries.append(self._entry(row, available[0]))
            page = entries[offset : offset + limit]
            return {"services": page, "count": len(page), "limit": limit, "offset": offset}
        service: FakeService | None
        if fqn.username is not None:  # direct
            service = next((s for s in self._live_services(now) if s.fqn == str(fqn)), None)
            if service is None:
                raise _Failure("Service not found")
        else:  # random, weighted by the number of available offers
            pool = [
                s
                for s in self._live_services(now)
                if s.service == fqn.service and s.version == fqn.version
                for _ in self._available_offers(s.id, now)
            ]
            if not pool:
                raise _Failure("No services found")
            service = self._rng.choice(pool)
        available = self._available_offers(service.id, now)
        if not available:
            raise _Failure("Service has no available offers")
        return self._entry(service, available[0])

    def _delete_service(self, username: str, params: Mapping[str, Any], now: int) -> Any:
        self._authenticate(username, now)
        fqn = validate_service_fqn(params.get("serviceFqn"))
        if fqn.username is None:
            raise _Failure("Service FQN must include username")
        service = next((s for s in self._live_services(now) if s.fqn == str(fqn)), None)
        if service is None:
            raise _Failure("Service not found")
        if service.username != username:
            raise _Failure("Service not found or not owned by this username")
        self._delete_service_rows(service.id)
        return {"success": True}

    def _answer_offer(self, username: str, params: Mapping[str, Any], now: int) -> Any:
        self._authenticate(username, now)
        sdp = params.get("sdp")
        if not isinstance(sdp, str) or not sdp:
            raise _Failure("Invalid SDP")
        if js_length(sdp) > MAX_ANSWER_SDP:
            raise _Failure("SDP too large (max 64KB)")
        offer = self._live_offer(params.get("offerId"), now)
        if offer.answerer is not None:
            raise _Failure("Offer already answered")
        self._store.offers[offer.id] = replace(
            offer, answerer=username, answer_sdp=sdp, answered_at=now
        )
        return {"success": True, "offerId": offer.id}

    def _get_offer_answer(self, username: str, params: Mapping[str, Any], now: int) -> Any:
        self._authenticate(username, now)
        offer = self._live_offer(params.get("offerId"), now)
        if offer.username != username:
            raise _Failure("Not authorized to access this offer")
        if offer.answerer is None:
            raise _Failure("Offer not yet answered")
        return {
            "sdp": offer.answer_sdp,
            "offerId": offer.id,
            "answererId": offer.answerer,
            "answeredAt": offer.answered_at,
        }

    def _poll(self, username: str, params: Mapping[str, Any], now: int) -> Any:
        self._authenticate(username, now)
        since = _number(params.get("since")) or 0
        owned = [
            o for o in self._store.offers.values() if o.username == username and o.expires_at > now
        ]
        answered = [o for o in owned if o.answered_at is not None and o.answered_at > since]
        answered.sort(key=lambda o: -(o.answered_at or 0))
        ice: dict[str, list[dict[str, Any]]] = {}
        for offer in sorted(reversed(owned), key=lambda o: -o.created_at):  # last_seen DESC
            rows = self._candidates_for(offer.id, "answerer", since)
            if rows:
                ice[offer.id] = [
                    {
                        "id": c.id,
                        "offerId": c.offer_id,
                        "username": c.username,
                        "role": c.role,
                        "candidate": c.candidate,
                        "createdAt": c.created_at,
                    }
                    for c in rows
                ]
        answers = [
            {
                "offerId": o.id,
                "serviceId": o.service_id,
                "answererId": o.answerer,
                "sdp": o.answer_sdp,
                "answeredAt": o.answered_at,
            }
            for o in answered
        ]
        return {"answers": answers, "iceCandidates": ice}

    def _candidates_for(self, offer_id: str, role: str, since: float) -> list[FakeCandidate]:
        found = [
            c
            for c in self._store.candidates
            if c.offer_id == offer_id and c.role == role and c.created_at > since
        ]
        return sorted(found, key=lambda c: c.created_at)  # stable: ties in insertion order

    def _add_ice_candidates(self, username: str, params: Mapping[str, Any], now: int) -> Any:
        self._authenticate(username, now)
        candidates = params.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            raise _Failure("Missing or invalid required parameter: candidates")
        for i, candidate in enumerate(candidates):
            if not isinstance(candidate, dict | list):
                raise _Failure(f"Invalid candidate at index {i}: must be an object")
        offer = self._live_offer(params.get("offerId"), now)
        role = "offerer" if offer.username == username else "answerer"
        mine = [c.created_at for c in self._store.candidates if c.offer_id == offer.id]
        last = max(mine, default=None)
        for i, candidate in enumerate(candidates):
            if self.mode == "upstream":  # request time + index: collides across requests (B5)
                created_at = now + i
            else:  # ours: strictly increasing per offer (§9 recommendation)
                created_at = now if last is None else max(now, last + 1)
                last = created_at
            self._store.candidates.append(
                FakeCandidate(
                    id=self._next_candidate_id,
                    offer_id=offer.id,
                    username=username,
                    role=role,
                    candidate=json.loads(json.dumps(candidate)),  # stored as opaque JSON text
                    created_at=created_at,
                )
            )
            self._next_candidate_id += 1
        return {"count": len(candidates), "offerId": offer.id}

    def _get_ice_candidates(self, username: str, params: Mapping[str, Any], now: int) -> Any:
        self._authenticate(username, now)
        offer = self._live_offer(params.get("offerId"), now)
        since = _number(params.get("since")) or 0
        role = "answerer" if offer.username == username else "offerer"
        return {
            "candidates": [
                {"candidate": c.candidate, "createdAt": c.created_at}
                for c in self._candidates_for(offer.id, role, since)
            ],
            "offerId": offer.id,
        }
