"""The storage interface every backend implements, and the records it returns.

One async interface, two backends (`rondevu_server.sqlite_storage`,
`rondevu_server.postgres_storage`), one shared test suite.  Each method is one atomic
unit of work: it runs in a single transaction, so concurrent server tasks or processes
never see half a publish (S5) and a conditional update decides every race (S3).

Invariants every backend keeps:
- Nothing expired is ever returned: every read filters ``expires_at > now``.  ``now`` is
  always an argument (Unix ms); a backend never reads a clock.
- Offer ids are unique among *live* offers; an expired offer with the same id is
  replaced, a live one makes the publish fail with nothing written.
- ICE ``createdAt`` is strictly increasing per offer (`next_ice_timestamps`).
- The owner of an offer only ever sees candidates sent by its actual answerer; the
  answerer sees the owner's; anyone else sees nothing (S4).

Domain refusals ("Offer not found", limits...) are raised as `Rejected`, whose text is
the wire error.  Anything else a backend raises is an internal error the server logs
and hides (S11).

Wake-ups (long polling, `rondevu_server.longpoll`): the writes that can give a held
call news (answer_offer, add_ice_candidates) return the keys of those calls, and tell
every other process on the same database, after their commit; a process hears the
others' through `Storage.listen`.  A backend only other processes can open (SQLite
``:memory:``) tells nobody.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Protocol

from rondevu_core.errors import ValidationError
from rondevu_core.rules.fqn import ServiceFqn
from rondevu_server.longpoll import WakeSink

__all__ = [
    "USERNAME_TTL_MS",
    "AnswerRecord",
    "ClaimOutcome",
    "CleanupCounts",
    "HandshakeSummary",
    "IceRecord",
    "OfferRecord",
    "Publication",
    "PublishedOffer",
    "Rejected",
    "ServiceOffer",
    "ServiceSummary",
    "StateOverview",
    "Storage",
    "UserRecord",
]

USERNAME_TTL_MS = 365 * 24 * 3600 * 1000
"""A claimed username lives this long after its claim or its last publish (§5)."""


class Rejected(ValidationError):
    """A refusal that is part of the protocol; ``str(err)`` is the wire error text."""


class ClaimOutcome(Enum):
    """How an attempt to claim a username ended."""

    CLAIMED = "claimed"
    """The name is now (or still) held by the given key."""
    OTHER_KEY = "other-key"
    """Another key holds the name (live, or expired and not yet cleaned up)."""
    KEY_TAKEN = "key-taken"
    """The key already holds a different name (one key, one name: S16)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRecord:
    """A claimed, unexpired username."""

    username: str
    public_key: str
    claimed_at: int
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishedOffer:
    """One offer as publishService reports it."""

    offer_id: str
    sdp: str
    created_at: int
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Publication:
    """The service a publishService call created, with its offers."""

    service_id: str
    username: str
    service_fqn: str
    created_at: int
    expires_at: int
    offers: tuple[PublishedOffer, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceOffer:
    """A service with its first available offer (the getService entry, §7.3)."""

    service_id: str
    username: str
    service_fqn: str
    offer_id: str
    sdp: str
    created_at: int
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferRecord:
    """A live offer, with its answer when it has one."""

    offer_id: str
    username: str
    service_id: str
    answerer_username: str | None
    answer_sdp: str | None
    answered_at: int | None


class AnswerRecord(NamedTuple):
    """An answer to one of the caller's offers, as poll reports it (§7.7).

    A named tuple (like `IceRecord`) so a backend builds one from a result row in one
    C call (``AnswerRecord._make(row)``): poll returns many of them.
    """

    offer_id: str
    service_id: str
    answerer_username: str
    sdp: str
    answered_at: int


class IceRecord(NamedTuple):
    """A stored candidate; ``candidate`` is its compact JSON text (fields in row order)."""

    id: int
    offer_id: str
    username: str
    role: str
    candidate: str
    created_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSummary:
    """A live service as the state overview shows it: names, times and counts only."""

    service_fqn: str
    username: str
    created_at: int
    expires_at: int
    available_offers: int
    answered_offers: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeSummary:
    """An answered live offer (a connection made or being made), without SDP or keys."""

    offer_ref: str
    """The first 12 hex digits of the offer id: enough to tell connections apart."""
    service_fqn: str
    offerer: str
    answerer: str
    answered_at: int
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StateOverview:
    """A bounded page of the live state (`Storage.overview`)."""

    services: tuple[ServiceSummary, ...]
    handshakes: tuple[HandshakeSummary, ...]
    total_services: int
    total_offers: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanupCounts:
    """Rows one cleanup pass removed."""

    offers: int
    services: int
    usernames: int


class Storage(Protocol):
    """What the server needs from a database.  All times are Unix ms, passed in."""

    async def close(self) -> None:
        """Release connections and threads; the object is unusable afterwards."""

    async def listen(self, sink: WakeSink) -> None:
        """Deliver to ``sink`` the wake-ups other processes' writes send, until `close`.

        Returns once listening (a wake-up sent after that is delivered); a private
        database has nobody to listen to and returns at once.
        """

    async def get_user(self, username: str, now: int) -> UserRecord | None:
        """The live claim on ``username``, if any."""

    async def claim_username(self, username: str, public_key: str, now: int) -> ClaimOutcome:
        """Claim ``username`` for ``public_key`` for `USERNAME_TTL_MS` (§5).

        A claim by the key that already holds the name (live or expired) renews it.
        """

    async def publish_service(
        self,
        *,
        fqn: ServiceFqn,
        service_id: str,
        offers: Sequence[tuple[str, str]],
        now: int,
        expires_at: int,
        max_offers_per_user: int,
    ) -> Publication:
        """Replace the service ``fqn`` (and its offers) by a new one, atomically.

        ``offers`` are ``(offer_id, sdp)`` pairs.  Also renews the owner's username.
        Rejects with nothing written when an id belongs to another live offer or when the
        owner would hold more than ``max_offers_per_user`` live offers.
        """

    async def find_service(self, fqn: ServiceFqn, now: int) -> ServiceOffer:
        """Direct lookup of ``service:version@username`` and its first available offer."""

    async def find_random_service(self, service: str, version: str, now: int) -> ServiceOffer:
        """A random service with an available offer, and that offer.

        Uniform among the services with one, within a bounded window of the newest (the
        original weighs services by their available offers, at a cost that grows with
        the table: see `rondevu_server.sql`).
        """

    async def list_services(
        self, service: str, version: str, limit: int, offset: int, now: int
    ) -> list[ServiceOffer]:
        """A page of services (newest first) with their first available offer.

        Only the 1000 newest matching services are considered, as in the original.
        """

    async def delete_service(self, fqn: ServiceFqn, username: str, now: int) -> None:
        """Delete the service (and its offers and candidates) if ``username`` owns it."""

    async def answer_offer(self, offer_id: str, username: str, sdp: str, now: int) -> Sequence[str]:
        """Record ``username``'s answer; exactly one concurrent caller can win.

        Returns the wake keys it gave news to: the owner's poll, and both sides'
        getIceCandidates of this offer (candidates sent early become readable).
        """

    async def get_offer(self, offer_id: str, now: int) -> OfferRecord | None:
        """The live offer ``offer_id``, if any."""

    async def poll(
        self, username: str, since: int, now: int
    ) -> tuple[list[AnswerRecord], list[IceRecord]]:
        """Answers to ``username``'s offers and their answerers' candidates after ``since``."""

    async def add_ice_candidates(
        self,
        offer_id: str,
        username: str,
        candidates: Sequence[str],
        now: int,
        max_per_offer: int,
    ) -> Sequence[str]:
        """Store candidates (JSON texts) sent by ``username`` for ``offer_id``.

        Returns the wake keys it gave news to: the other side's getIceCandidates of
        this offer, and the owner's poll when the sender is the answerer.
        """

    async def get_ice_candidates(
        self, offer_id: str, username: str, since: int, now: int
    ) -> list[tuple[str, int]]:
        """``(candidate JSON, createdAt)`` pairs ``username`` may read, after ``since``."""

    async def overview(self, limit: int, offset: int, now: int) -> StateOverview:
        """Up to ``limit`` live services (newest first) and answered offers (newest
        answer first), each list from ``offset`` on, and the live totals."""

    async def count_live_offers(self, now: int) -> int:
        """Live offers in the whole deployment (for the capacity bound)."""

    async def cleanup(self, now: int) -> CleanupCounts:
        """Delete expired offers, services and usernames (S9)."""
