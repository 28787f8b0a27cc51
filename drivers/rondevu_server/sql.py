"""The storage logic of both SQL backends, written once as plans of statements (sans-IO).

Every `Storage` method is a *plan* here (`PlanStorage` maps each method to its plan): a
generator that yields steps (one SQL statement, how to read its result, its arguments)
and receives each result; its return value is the method's result.  A backend only
runs steps: `SqliteStorage` on its connection, synchronously; `PostgresStorage` on a
pooled asyncpg connection, awaiting each.  So the checks, the order of statements and
the records built from rows exist once, and the backends differ only where the
databases do: parameter style, arrays, row locks and advisory locks (`Sql` carries both
texts; a ``None`` text is a step that backend skips).  The three plans with several
writes (publish, add_ice, cleanup) run in one transaction; every other plan is one
write or only reads.

A unique-key violation raised by a step is thrown into the plan as `Conflict`, which a
plan either handles or lets propagate.  Statements are few and merged where one
statement can answer (direct and random discovery, getIceCandidates, deleteService),
and single-statement writes run without a transaction (answerOffer is a conditional
update and then a clean-up that is correct on its own).

The two writes that wake held calls (answer, add_ice) end with an *announce* step
(`wake_payload`): PostgreSQL ``NOTIFY`` on the deployment's channel (`WAKE_CHANNEL`),
delivered to listeners at commit; on SQLite, a row in ``rondevu_wakes`` that other
processes on the file read (`SCHEMA_SQLITE_WAKES`).  A database no other process can
open skips it (`Sql.announce`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from rondevu_core.rules.fqn import ServiceFqn
from rondevu_core.rules.server_params import next_ice_timestamps
from rondevu_server import messages
from rondevu_server.longpoll import end_key, ice_key, poll_key
from rondevu_server.storage import (
    USERNAME_TTL_MS,
    AnswerRecord,
    ClaimOutcome,
    CleanupCounts,
    HandshakeSummary,
    IceRecord,
    OfferRecord,
    Publication,
    PublishedOffer,
    Rejected,
    ServiceOffer,
    ServiceSummary,
    StateOverview,
    UserRecord,
)

__all__ = [
    "DISCOVERY_WINDOW",
    "SCHEMA_SQLITE_WAKES",
    "SCHEMA_V1",
    "SCHEMA_V2",
    "SCHEMA_V3",
    "WAKE_CHANNEL",
    "Conflict",
    "Fetch",
    "Plan",
    "PlanStorage",
    "Sql",
    "Step",
    "parse_wake_payload",
    "wake_payload",
]

_T = TypeVar("_T")
_NUMBERED = re.compile(r"\$(\d+)")


@dataclass(frozen=True, slots=True)
class Sql:
    """One statement for each backend; ``None``: that backend has no such step."""

    postgres: str | None
    sqlite: str | None
    json_arrays: bool = False
    """SQLite receives list arguments as JSON text (read with ``json_each``)."""
    announce: bool = False
    """Only tells other processes something: skipped where there can be none."""


def _sql(text: str) -> Sql:
    """The same statement on both: ``$n`` parameters become SQLite's ``?n``."""
    return Sql(text, _NUMBERED.sub(r"?\1", text))


class Fetch(Enum):
    """What a step's result is."""

    ONE = "one"
    """The first row, or None."""
    ALL = "all"
    """Every row."""
    VALUE = "value"
    """The first column of the first row, or None."""
    COUNT = "count"
    """The number of rows the statement changed."""
    MANY = "many"
    """Nothing: the statement ran once per argument tuple."""


Step = tuple[Sql, Fetch, Sequence[Any]]
Plan = Generator[Step, Any, _T]


class Conflict(Exception):
    """A step hit a unique key (thrown into the plan by the backend)."""


SCHEMA_V1 = """
    CREATE TABLE usernames (
        username TEXT PRIMARY KEY,
        public_key TEXT NOT NULL UNIQUE,
        claimed_at {int} NOT NULL,
        expires_at {int} NOT NULL,
        last_used {int} NOT NULL,
        CHECK (length(username) >= 3 AND length(username) <= 32)
    );
    CREATE INDEX idx_usernames_expires ON usernames(expires_at);
    CREATE TABLE services (
        seq {serial},
        id TEXT NOT NULL UNIQUE,
        service_fqn TEXT NOT NULL UNIQUE,
        service_name TEXT NOT NULL,
        version TEXT NOT NULL,
        username TEXT NOT NULL REFERENCES usernames(username) ON DELETE CASCADE,
        created_at {int} NOT NULL,
        expires_at {int} NOT NULL
    );
    CREATE INDEX idx_services_name ON services(service_name, version, created_at);
    CREATE INDEX idx_services_username ON services(username);
    CREATE INDEX idx_services_expires ON services(expires_at);
    CREATE TABLE offers (
        seq {serial},
        id TEXT NOT NULL UNIQUE,
        username TEXT NOT NULL,
        service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
        sdp TEXT NOT NULL,
        created_at {int} NOT NULL,
        expires_at {int} NOT NULL,
        answerer_username TEXT,
        answer_sdp TEXT,
        answered_at {int},
        ice_last {int}
    );
    CREATE INDEX idx_offers_username ON offers(username);
    CREATE INDEX idx_offers_service ON offers(service_id);
    CREATE INDEX idx_offers_expires ON offers(expires_at);
    CREATE TABLE ice_candidates (
        id {serial},
        offer_id TEXT NOT NULL REFERENCES offers(id) ON DELETE CASCADE,
        username TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('offerer', 'answerer')),
        candidate TEXT NOT NULL,
        created_at {int} NOT NULL
    );
    CREATE INDEX idx_ice_offer ON ice_candidates(offer_id, created_at);
"""
"""Version 1 of the schema; ``{int}`` and ``{serial}`` are each backend's types."""

SCHEMA_V2 = """
    CREATE INDEX idx_offers_owner ON offers(username, created_at);
    CREATE INDEX idx_offers_service_order ON offers(service_id, created_at);
    DROP INDEX idx_offers_username;
    DROP INDEX idx_offers_service;
"""
"""Version 2: offer indexes in the order poll and "first free offer" read them, so
neither sorts (poll's candidates come out in ``ORDER BY`` order straight from them)."""

SCHEMA_V3 = """
    CREATE INDEX idx_offers_free ON offers(service_id, created_at, seq)
        WHERE answerer_username IS NULL;
"""
"""Version 3: an index of each service's unanswered offers, in the order every lookup of
"the first available offer" and random discovery read them.  Without it PostgreSQL,
before its statistics catch up (a fresh or busy table), combined the service index with
the expiry index in a bitmap scan that read every live offer in the table once per
service listed."""

SCHEMA_SQLITE_WAKES = """
    CREATE TABLE rondevu_wakes (
        seq INTEGER PRIMARY KEY,
        payload TEXT NOT NULL
    );
"""
"""SQLite version 4 (SQLite only): the wake-ups written for other processes on the same
file, read by ``seq`` (see `rondevu_server.sqlite_storage`); cleanup keeps the newest
`_WAKES_KEPT`."""

WAKE_CHANNEL = "'rondevu_wake_' || left(md5(current_schema()), 16)"
"""The PostgreSQL NOTIFY channel of a deployment, as an SQL expression: one per schema,
so deployments (and parallel test runs) sharing a database never wake each other.  A
hash, because a channel name is at most 63 bytes and a schema name may be 63 too."""

_WAKES_KEPT = 10_000

# -- statements ----------------------------------------------------------------------

_GET_USER = _sql(
    "SELECT public_key, claimed_at, expires_at FROM usernames"
    " WHERE username = $1 AND expires_at > $2"
)
_CLAIM = _sql(
    "INSERT INTO usernames (username, public_key, claimed_at, expires_at, last_used)"
    " VALUES ($1, $2, $3, $4, $3)"
    " ON CONFLICT (username) DO UPDATE SET expires_at = excluded.expires_at,"
    " last_used = excluded.last_used"
    " WHERE usernames.public_key = excluded.public_key"
    " RETURNING username"
)
_LOCK_USER = Sql("SELECT pg_advisory_xact_lock(hashtext('rondevu-user:' || $1))", None)
_OLD_SERVICE = _sql("SELECT id FROM services WHERE service_fqn = $1")
_DROP_REPLACED = _sql(
    "DELETE FROM offers WHERE service_id = $1 AND (answerer_username IS NULL OR expires_at <= $2)"
)
_KEPT_OFFERS = _sql(
    "SELECT id, sdp, created_at, expires_at FROM offers WHERE service_id = $1"
    " ORDER BY created_at, seq"
)
_DELETE_SERVICE_ID = _sql("DELETE FROM services WHERE id = $1")
_REFRESH_SERVICE = _sql("UPDATE services SET created_at = $2, expires_at = $3 WHERE id = $1")
_TAKEN_ID = Sql(
    "SELECT 1 FROM offers WHERE id = ANY($1::text[]) AND expires_at > $2 LIMIT 1",
    "SELECT 1 FROM offers WHERE id IN (SELECT value FROM json_each(?1)) AND expires_at > ?2"
    " LIMIT 1",
    json_arrays=True,
)
_CLEAR_IDS = Sql(
    "DELETE FROM offers WHERE id = ANY($1::text[])",
    "DELETE FROM offers WHERE id IN (SELECT value FROM json_each(?1))",
    json_arrays=True,
)
_HELD_OFFERS = _sql("SELECT COUNT(*) FROM offers WHERE username = $1 AND expires_at > $2")
_INSERT_SERVICE = _sql(
    "INSERT INTO services (id, service_fqn, service_name, version, username, created_at,"
    " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
_INSERT_OFFER = _sql(
    "INSERT INTO offers (id, username, service_id, sdp, created_at, expires_at)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
)
_TOUCH_USER = _sql("UPDATE usernames SET last_used = $2, expires_at = $3 WHERE username = $1")

_SERVICE_COLUMNS = "s.id, s.username, s.service_fqn, s.created_at, s.expires_at, f.id, f.sdp"
_FIRST_FREE_OFFER = (
    "(SELECT o.seq FROM offers o WHERE o.service_id = s.id AND o.answerer_username IS NULL"
    " AND o.expires_at > {now} ORDER BY o.created_at, o.seq LIMIT 1)"
)
_FIND_SERVICE = _sql(
    f"SELECT {_SERVICE_COLUMNS} FROM services s"
    f" LEFT JOIN offers f ON f.seq = {_FIRST_FREE_OFFER.format(now='$2')}"
    " WHERE s.service_fqn = $1 AND s.expires_at > $2"
)
DISCOVERY_WINDOW = 1000
"""How many of the newest services of one name and version discovery considers.

The paginated mode pages through the newest this many with an available offer, as the
original does; random discovery picks among the newest this many service rows, live or
not, with an available offer or not (see `_find_random`)."""
_RANDOM_SAMPLE = 16
_WINDOW = (
    "SELECT s.seq FROM services s WHERE s.service_name = $1 AND s.version = $2"
    f" ORDER BY s.created_at DESC LIMIT {DISCOVERY_WINDOW}"
)
# A live service with a free offer.  A scalar subquery, not EXISTS: PostgreSQL may turn
# EXISTS into a hash semi-join that reads every offer; this stays one probe per service.
_AVAILABLE = (
    "s.expires_at > $3 AND (SELECT 1 FROM offers o WHERE o.service_id = s.id"
    " AND o.answerer_username IS NULL AND o.expires_at > $3 LIMIT 1) IS NOT NULL"
)
_FIND_RANDOM = _sql(
    # Bounded whatever the table holds: at most DISCOVERY_WINDOW entries of the service
    # index, and one free-offer probe per service looked at.  Fast arm: shuffle the
    # window's row numbers (no probe yet), probe a sample of them in that order (the join
    # reads the shuffled sample as it comes), keep the first available.  Slow arm, run
    # only when the sample held none (UNION ALL under LIMIT 1 stops at the first row on
    # both databases): probe the whole window and pick one at random, so "No services
    # found" is only ever said of a window without any.  Either way the pick is uniform
    # among the window's available services.
    f"SELECT {_SERVICE_COLUMNS} FROM ("
    "   SELECT fast.seq FROM ("
    "     SELECT s.seq FROM ("
    f"       SELECT w.seq FROM ({_WINDOW}) w ORDER BY random() LIMIT {_RANDOM_SAMPLE}) c"
    f"     JOIN services s ON s.seq = c.seq WHERE {_AVAILABLE} LIMIT 1) fast"
    "   UNION ALL"
    "   SELECT slow.seq FROM ("
    f"     SELECT s.seq FROM ({_WINDOW}) w JOIN services s ON s.seq = w.seq"
    f"     WHERE {_AVAILABLE} ORDER BY random() LIMIT 1) slow"
    "   LIMIT 1) pick"
    " JOIN services s ON s.seq = pick.seq"
    f" LEFT JOIN offers f ON f.seq = {_FIRST_FREE_OFFER.format(now='$3')}"
)
_LIST_WHERE = (
    " WHERE s.service_name = $2 AND s.version = $3 AND s.expires_at > $1"
    " ORDER BY s.created_at DESC, s.seq DESC LIMIT $4 OFFSET $5"
)
_LIST_SERVICES = Sql(
    # PostgreSQL plans the scalar-subquery join as a hash join over every offer; a
    # lateral join looks up each service's first free offer by index instead.
    f"SELECT {_SERVICE_COLUMNS} FROM services s CROSS JOIN LATERAL ("
    "   SELECT o.id, o.sdp FROM offers o WHERE o.service_id = s.id"
    "   AND o.answerer_username IS NULL AND o.expires_at > $1"
    f"   ORDER BY o.created_at, o.seq LIMIT 1) f{_LIST_WHERE}",
    _NUMBERED.sub(
        r"?\1",
        f"SELECT {_SERVICE_COLUMNS} FROM services s"
        f" JOIN offers f ON f.seq = {_FIRST_FREE_OFFER.format(now='$1')}{_LIST_WHERE}",
    ),
)
_DELETE_OWNED_SERVICE = _sql(
    "DELETE FROM services WHERE service_fqn = $1 AND expires_at > $2 AND username = $3"
)
_SERVICE_OWNER = _sql("SELECT username FROM services WHERE service_fqn = $1 AND expires_at > $2")
_ANSWER = _sql(
    "UPDATE offers SET answerer_username = $1, answer_sdp = $2, answered_at = $3"
    " WHERE id = $4 AND expires_at > $3 AND answerer_username IS NULL RETURNING username"
)
_OFFER_LIVE = _sql("SELECT 1 FROM offers WHERE id = $1 AND expires_at > $2")
_DROP_OUTSIDERS_ICE = _sql(
    "DELETE FROM ice_candidates WHERE offer_id = $1 AND role = 'answerer' AND username <> $2"
)
_GET_OFFER = _sql(
    "SELECT username, service_id, answerer_username, answer_sdp, answered_at"
    " FROM offers WHERE id = $1 AND expires_at > $2"
)
_POLL_ANSWERS = _sql(
    "SELECT id, service_id, answerer_username, answer_sdp, answered_at FROM offers"
    " WHERE username = $1 AND expires_at > $2 AND answered_at > $3"
    " ORDER BY answered_at DESC, seq DESC"
)
_POLL_ICE = _sql(
    "SELECT c.id, c.offer_id, c.username, c.role, c.candidate, c.created_at"
    " FROM offers o JOIN ice_candidates c ON c.offer_id = o.id"
    " WHERE o.username = $1 AND o.expires_at > $2 AND o.answerer_username IS NOT NULL"
    " AND c.role = 'answerer' AND c.username = o.answerer_username AND c.created_at > $3"
    " ORDER BY o.created_at DESC, o.seq DESC, c.created_at, c.id"
)
_ICE_TARGET_COLUMNS = (
    "SELECT username, answerer_username, ice_last FROM offers WHERE id = $1 AND expires_at > $2"
)
_ICE_TARGET = Sql(  # the row lock orders concurrent writers' createdAt (B5) and counts
    _ICE_TARGET_COLUMNS + " FOR UPDATE", _NUMBERED.sub(r"?\1", _ICE_TARGET_COLUMNS)
)
# Its own statement, after the lock: in one statement with the FOR UPDATE, PostgreSQL would
# count with the snapshot taken before the lock wait, missing the rows of the writer it
# waited for.  The count stops at the cap: rows past it change no decision.
_ICE_HELD = _sql(
    "SELECT COUNT(*), COUNT(CASE WHEN role = 'answerer' THEN 1 END) FROM ("
    " SELECT role FROM ice_candidates WHERE offer_id = $1 LIMIT $2) held"
)
_INSERT_ICE = _sql(
    "INSERT INTO ice_candidates (offer_id, username, role, candidate, created_at)"
    " VALUES ($1, $2, $3, $4, $5)"
)
_SET_ICE_LAST = _sql("UPDATE offers SET ice_last = $1 WHERE id = $2")
_GET_ICE = _sql(
    "SELECT o.username, o.answerer_username, c.candidate, c.created_at FROM offers o"
    " LEFT JOIN ice_candidates c ON c.offer_id = o.id AND c.created_at > $3 AND ("
    "   (o.username = $2 AND c.role = 'answerer' AND c.username = o.answerer_username)"
    "   OR (o.username <> $2 AND o.answerer_username = $2"
    "       AND c.role = 'offerer' AND c.username = o.username))"
    " WHERE o.id = $1 AND o.expires_at > $4"
    " ORDER BY c.created_at, c.id"
)
_COUNT_LIVE = _sql("SELECT COUNT(*) FROM offers WHERE expires_at > $1")
_COUNT_SERVICES = _sql("SELECT COUNT(*) FROM services WHERE expires_at > $1")
# The overview reads names, times and counts only: never an SDP, a candidate or a key.
# The page of rows is chosen first and only then counted and joined: in the outer
# select, the counts (or the join) would run for every live row before the sort.
_OVERVIEW_SERVICES = _sql(
    "SELECT s.service_fqn, s.username, s.created_at, s.expires_at,"
    " (SELECT COUNT(*) FROM offers o WHERE o.service_id = s.id AND o.expires_at > $1"
    "  AND o.answerer_username IS NULL),"
    " (SELECT COUNT(*) FROM offers o WHERE o.service_id = s.id AND o.expires_at > $1"
    "  AND o.answerer_username IS NOT NULL)"
    " FROM (SELECT id, service_fqn, username, created_at, expires_at, seq FROM services"
    "  WHERE expires_at > $1 ORDER BY created_at DESC, seq DESC LIMIT $2 OFFSET $3) s"
    " ORDER BY s.created_at DESC, s.seq DESC"
)
_OVERVIEW_HANDSHAKES = _sql(
    "SELECT substr(o.id, 1, 12), s.service_fqn, o.username, o.answerer_username,"
    " o.answered_at, o.expires_at"
    " FROM (SELECT id, service_id, username, answerer_username, answered_at, expires_at, seq"
    "  FROM offers WHERE answerer_username IS NOT NULL AND expires_at > $1"
    "  ORDER BY answered_at DESC, seq DESC LIMIT $2 OFFSET $3) o"
    " JOIN services s ON s.id = o.service_id"
    " ORDER BY o.answered_at DESC, o.seq DESC"
)
_EXPIRED = (
    _sql("DELETE FROM offers WHERE expires_at <= $1"),
    _sql("DELETE FROM services WHERE expires_at <= $1"),
    _sql("DELETE FROM usernames WHERE expires_at <= $1"),
)
_ANNOUNCE = Sql(
    f"SELECT pg_notify({WAKE_CHANNEL}, $1)",
    "INSERT INTO rondevu_wakes (payload) VALUES (?1)",
    announce=True,
)
_PRUNE_WAKES = Sql(
    None,
    "DELETE FROM rondevu_wakes WHERE seq <= (SELECT max(seq) FROM rondevu_wakes) - ?1",
    announce=True,
)

# -- plans ---------------------------------------------------------------------------


def _service_offer(row: Sequence[Any]) -> ServiceOffer:
    return ServiceOffer(
        service_id=row[0],
        username=row[1],
        service_fqn=row[2],
        created_at=row[3],
        expires_at=row[4],
        offer_id=row[5],
        sdp=row[6],
    )


def _get_user(username: str, now: int) -> Plan[UserRecord | None]:
    """See `Storage.get_user`."""
    row = yield _GET_USER, Fetch.ONE, (username, now)
    if row is None:
        return None
    return UserRecord(username=username, public_key=row[0], claimed_at=row[1], expires_at=row[2])


def _claim(username: str, public_key: str, now: int) -> Plan[ClaimOutcome]:
    """See `Storage.claim_username`."""
    try:
        row = yield _CLAIM, Fetch.ONE, (username, public_key, now, now + USERNAME_TTL_MS)
    except Conflict:  # the key already holds another name (S16)
        return ClaimOutcome.KEY_TAKEN
    return ClaimOutcome.CLAIMED if row is not None else ClaimOutcome.OTHER_KEY


def _publish(
    fqn: ServiceFqn,
    service_id: str,
    offers: Sequence[tuple[str, str]],
    now: int,
    expires_at: int,
    max_offers_per_user: int,
    origin: str,
) -> Plan[Publication]:
    """See `Storage.publish_service`.

    Replaces the service's *unanswered* offers; offers of it that are already answered
    stay, with their candidates and expiry, so a handshake in progress survives a
    republish that raced with it (B8).  The service then keeps its row and id (its
    expiry covers its kept offers); with nothing kept it gets a fresh row, as in the
    original.  An offer in the request identical to a kept one is that offer, reported
    as stored.
    """
    username = fqn.username
    assert username is not None
    fqn_text = str(fqn)
    yield _LOCK_USER, Fetch.VALUE, (username,)
    old_id = yield _OLD_SERVICE, Fetch.VALUE, (fqn_text,)
    kept: dict[str, PublishedOffer] = {}
    # The owner's held polls end (at commit): a process of the same user may have
    # replaced the offers another one is waiting on, and only a look tells it.
    yield _announce(origin, [end_key(poll_key(username))])
    if old_id is not None:
        yield _DROP_REPLACED, Fetch.COUNT, (old_id, now)
        rows = yield _KEPT_OFFERS, Fetch.ALL, (old_id,)
        for oid, sdp, created_at, offer_expires_at in rows:
            kept[oid] = PublishedOffer(
                offer_id=oid, sdp=sdp, created_at=created_at, expires_at=offer_expires_at
            )
        if not kept:
            yield _DELETE_SERVICE_ID, Fetch.COUNT, (old_id,)
    fresh = [(oid, sdp) for oid, sdp in offers if oid not in kept]
    ids = [oid for oid, _ in fresh]
    this_service = old_id if kept else service_id
    service_expires = expires_at
    try:
        if ids:
            taken = yield _TAKEN_ID, Fetch.VALUE, (ids, now)
            if taken is not None:
                raise Rejected(messages.OFFER_EXISTS)
            yield _CLEAR_IDS, Fetch.COUNT, (ids,)  # expired namesakes
        held = yield _HELD_OFFERS, Fetch.VALUE, (username, now)
        if held + len(fresh) > max_offers_per_user:
            raise Rejected(messages.USER_OFFER_LIMIT.format(limit=max_offers_per_user))
        if kept:
            # The service lives as long as its longest offer; new offers get their own ttl.
            service_expires = max(expires_at, *(offer.expires_at for offer in kept.values()))
            yield _REFRESH_SERVICE, Fetch.COUNT, (this_service, now, service_expires)
        else:
            yield (
                _INSERT_SERVICE,
                Fetch.COUNT,
                (service_id, fqn_text, fqn.service, fqn.version, username, now, expires_at),
            )
        if fresh:
            yield (
                _INSERT_OFFER,
                Fetch.MANY,
                [(oid, username, this_service, sdp, now, expires_at) for oid, sdp in fresh],
            )
    except Conflict:  # another process took one of the ids between check and insert
        raise Rejected(messages.OFFER_EXISTS) from None
    yield _TOUCH_USER, Fetch.COUNT, (username, now, now + USERNAME_TTL_MS)
    return Publication(
        service_id=this_service,
        username=username,
        service_fqn=fqn_text,
        created_at=now,
        expires_at=service_expires,
        offers=tuple(
            kept.get(oid)
            or PublishedOffer(offer_id=oid, sdp=sdp, created_at=now, expires_at=expires_at)
            for oid, sdp in offers
        ),
    )


def _find_service(fqn_text: str, now: int) -> Plan[ServiceOffer]:
    """See `Storage.find_service`."""
    row = yield _FIND_SERVICE, Fetch.ONE, (fqn_text, now)
    if row is None:
        raise Rejected(messages.SERVICE_NOT_FOUND)
    if row[5] is None:
        raise Rejected(messages.NO_AVAILABLE_OFFERS)
    return _service_offer(row)


def _find_random(service: str, version: str, now: int) -> Plan[ServiceOffer]:
    """See `Storage.find_random_service`: one statement, bounded by `DISCOVERY_WINDOW`.

    Deviation: the original shuffles every free offer of every matching service
    (``ORDER BY random() LIMIT 1`` over the join), so a pick weighs services by their
    free offers and costs a pass over all of them - 30 ms for 1000 users with 100 offers
    each, and SQLite ``:memory:`` runs on the event loop, 100 calls to a batch.  Here the
    pick is uniform among the services that are live and have a free offer within the
    `DISCOVERY_WINDOW` newest rows of that name and version (by last publish, expired
    rows not yet cleaned up included), whatever the number of offers each has.  That
    pick costs about 0.3 ms on SQLite whatever the table holds (under 1 ms when
    few services of the window have a free offer), where the original's took 30 ms.
    """
    row = yield _FIND_RANDOM, Fetch.ONE, (service, version, now)
    if row is None:
        raise Rejected(messages.NO_SERVICES_FOUND)
    if row[5] is None:  # one statement, one snapshot: kept for the contract
        raise Rejected(messages.NO_AVAILABLE_OFFERS)
    return _service_offer(row)


def _list_services(
    service: str, version: str, limit: int, offset: int, now: int
) -> Plan[list[ServiceOffer]]:
    """See `Storage.list_services`."""
    # The original scans the 1000 newest services, then pages: same window here.
    limit = max(0, min(limit, DISCOVERY_WINDOW - offset))
    if limit == 0:  # past the window: nothing to read (and offset may exceed SQL integers)
        return []
    rows = yield _LIST_SERVICES, Fetch.ALL, (now, service, version, limit, offset)
    return [_service_offer(row) for row in rows]


def _delete_service(fqn_text: str, username: str, now: int, origin: str) -> Plan[None]:
    """See `Storage.delete_service` (one statement, and the announce, when it succeeds)."""
    deleted = yield _DELETE_OWNED_SERVICE, Fetch.COUNT, (fqn_text, now, username)
    if deleted:
        # As for a replacement (`_publish`): the owner's held polls end now.
        yield _announce(origin, [end_key(poll_key(username))])
        return
    owner = yield _SERVICE_OWNER, Fetch.VALUE, (fqn_text, now)
    raise Rejected(messages.SERVICE_NOT_FOUND if owner is None else messages.SERVICE_NOT_OWNED)


def wake_payload(origin: str, keys: Sequence[str]) -> str:
    """The text an announce step carries: the writer's origin, then the keys (none of
    them holds a space: usernames, offer ids and origins are [a-z0-9.:-])."""
    return " ".join((origin, *keys))


def parse_wake_payload(payload: str) -> tuple[str, list[str]]:
    """``(origin, keys)`` from an announce payload (see `wake_payload`)."""
    origin, *keys = payload.split(" ")
    return origin, keys


def _announce(origin: str, keys: Sequence[str]) -> Step:
    return _ANNOUNCE, Fetch.VALUE, (wake_payload(origin, keys),)


def _answer(offer_id: str, username: str, sdp: str, now: int, origin: str) -> Plan[list[str]]:
    """See `Storage.answer_offer`: the conditional update alone decides the race (S3)."""
    owner = yield _ANSWER, Fetch.VALUE, (username, sdp, now, offer_id)
    if owner is None:
        live = yield _OFFER_LIVE, Fetch.VALUE, (offer_id, now)
        raise Rejected(messages.OFFER_ALREADY_ANSWERED if live else messages.OFFER_NOT_FOUND)
    # Candidates other would-be answerers sent before the answer can never be shown to
    # anyone (S4), so they are dropped now rather than at expiry, which also gives the
    # answerer back the share of the candidate cap they held (`_add_ice`).
    yield _DROP_OUTSIDERS_ICE, Fetch.COUNT, (offer_id, username)
    keys = [poll_key(owner), ice_key(offer_id, owner), ice_key(offer_id, username)]
    yield _announce(origin, keys)
    return keys


def _get_offer(offer_id: str, now: int) -> Plan[OfferRecord | None]:
    """See `Storage.get_offer`."""
    row = yield _GET_OFFER, Fetch.ONE, (offer_id, now)
    if row is None:
        return None
    return OfferRecord(
        offer_id=offer_id,
        username=row[0],
        service_id=row[1],
        answerer_username=row[2],
        answer_sdp=row[3],
        answered_at=row[4],
    )


def _poll(username: str, since: int, now: int) -> Plan[tuple[list[AnswerRecord], list[IceRecord]]]:
    """See `Storage.poll`."""
    answers = yield _POLL_ANSWERS, Fetch.ALL, (username, now, since)
    ice = yield _POLL_ICE, Fetch.ALL, (username, now, since)
    return list(map(AnswerRecord._make, answers)), list(map(IceRecord._make, ice))


def _ice_limit_exceeded(role: str, held: Sequence[int], adding: int, cap: int) -> int | None:
    """The per-offer bound that storing ``adding`` more would break, if any.

    ``held`` is (all candidates of the offer, those of role ``answerer``).
    """
    total, others = held
    if total + adding > cap:
        return cap
    if role == "answerer" and others + adding > cap // 2:
        return cap // 2
    return None


def _add_ice(
    offer_id: str,
    username: str,
    candidates: Sequence[str],
    now: int,
    max_per_offer: int,
    origin: str,
) -> Plan[list[str]]:
    """See `Storage.add_ice_candidates`: at most ``max_per_offer`` stored per offer.

    The cap is for the offer, all senders and both roles together, so many usernames
    cannot each store their own quota on one offer.  Within it, everyone but the owner
    (role ``answerer``) shares at most half, rounded down: before the answer anyone may
    send as answerer (§7.8), and without that share outsiders could fill the whole cap
    before the owner (who uploads as soon as it has published) sent its candidates.  The
    owner may use whatever the others leave.  Outsiders cannot block the actual answerer
    either: once the offer is answered they are refused (`messages.NOT_AUTHORIZED_OFFER`)
    and the answer drops what they stored (`_answer`), so the answerer gets the others'
    half back.  Should that clean-up not have run (answerOffer's two statements are not
    one transaction), a refusal of the answerer runs it and counts again.

    Counting reads the offer's candidates through ``idx_ice_offer``, so it costs at most
    the cap's worth of rows whatever the sender; it runs after the offer row is locked
    (PostgreSQL), so concurrent writers to one offer are counted one after the other.
    """
    offer = yield _ICE_TARGET, Fetch.ONE, (offer_id, now)
    if offer is None:
        raise Rejected(messages.OFFER_NOT_FOUND)
    owner, answerer, last = offer
    if username == owner:
        role = "offerer"
    elif answerer is None or answerer == username:
        role = "answerer"
    else:
        raise Rejected(messages.NOT_AUTHORIZED_OFFER)
    held = yield _ICE_HELD, Fetch.ONE, (offer_id, max_per_offer)
    exceeded = _ice_limit_exceeded(role, held, len(candidates), max_per_offer)
    if exceeded is not None and username == answerer:
        dropped = yield _DROP_OUTSIDERS_ICE, Fetch.COUNT, (offer_id, username)
        if dropped:
            held = yield _ICE_HELD, Fetch.ONE, (offer_id, max_per_offer)
            exceeded = _ice_limit_exceeded(role, held, len(candidates), max_per_offer)
    if exceeded is not None:
        raise Rejected(messages.OFFER_CANDIDATE_LIMIT.format(limit=exceeded))
    stamps = next_ice_timestamps(last, now, len(candidates))
    yield (
        _INSERT_ICE,
        Fetch.MANY,
        [
            (offer_id, username, role, text, stamp)
            for text, stamp in zip(candidates, stamps, strict=True)
        ],
    )
    yield _SET_ICE_LAST, Fetch.COUNT, (stamps[-1], offer_id)
    # Only the offer's two participants ever read its candidates (S4): the owner reads
    # the actual answerer's (in poll too), the answerer the owner's.  Before the answer
    # nobody can read them yet; answerOffer wakes both sides then.
    if answerer is None:
        return []
    if role == "offerer":
        keys = [ice_key(offer_id, answerer)]
    else:
        keys = [ice_key(offer_id, owner), poll_key(owner)]
    yield _announce(origin, keys)
    return keys


def _get_ice(offer_id: str, username: str, since: int, now: int) -> Plan[list[tuple[str, int]]]:
    """See `Storage.get_ice_candidates`: one statement.  The owner reads its actual
    answerer's candidates, the answerer the owner's, anyone else nothing (S4)."""
    rows = yield _GET_ICE, Fetch.ALL, (offer_id, username, since, now)
    if not rows:
        raise Rejected(messages.OFFER_NOT_FOUND)
    return [(row[2], row[3]) for row in rows if row[2] is not None]


def _count_live(now: int) -> Plan[int]:
    """See `Storage.count_live_offers`."""
    count = yield _COUNT_LIVE, Fetch.VALUE, (now,)
    return int(count)


def _overview(limit: int, offset: int, now: int) -> Plan[StateOverview]:
    """See `Storage.overview`."""
    services = yield _OVERVIEW_SERVICES, Fetch.ALL, (now, limit, offset)
    handshakes = yield _OVERVIEW_HANDSHAKES, Fetch.ALL, (now, limit, offset)
    total_services = yield _COUNT_SERVICES, Fetch.VALUE, (now,)
    total_offers = yield _COUNT_LIVE, Fetch.VALUE, (now,)
    return StateOverview(
        services=tuple(
            ServiceSummary(
                service_fqn=row[0],
                username=row[1],
                created_at=int(row[2]),
                expires_at=int(row[3]),
                available_offers=int(row[4]),
                answered_offers=int(row[5]),
            )
            for row in services
        ),
        handshakes=tuple(
            HandshakeSummary(
                offer_ref=row[0],
                service_fqn=row[1],
                offerer=row[2],
                answerer=row[3],
                answered_at=int(row[4]),
                expires_at=int(row[5]),
            )
            for row in handshakes
        ),
        total_services=int(total_services),
        total_offers=int(total_offers),
    )


def _cleanup(now: int) -> Plan[CleanupCounts]:
    """See `Storage.cleanup`."""
    offers = yield _EXPIRED[0], Fetch.COUNT, (now,)
    services = yield _EXPIRED[1], Fetch.COUNT, (now,)
    users = yield _EXPIRED[2], Fetch.COUNT, (now,)
    yield _PRUNE_WAKES, Fetch.COUNT, (_WAKES_KEPT,)
    return CleanupCounts(offers=offers, services=services, usernames=users)


class PlanStorage:
    """`Storage` by running this module's plans; a backend supplies `_run` (and open,
    close and listen).  ``write`` plans must run in one transaction."""

    def __init__(self) -> None:
        self.origin = uuid.uuid4().hex[:16]
        """Marks this object's announcements, so that it can skip its own."""

    async def _run(self, plan: Plan[_T], *, write: bool = False) -> _T:
        raise NotImplementedError

    async def get_user(self, username: str, now: int) -> UserRecord | None:
        """See `Storage.get_user`."""
        return await self._run(_get_user(username, now))

    async def claim_username(self, username: str, public_key: str, now: int) -> ClaimOutcome:
        """See `Storage.claim_username`."""
        return await self._run(_claim(username, public_key, now))

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
        """See `Storage.publish_service`."""
        plan = _publish(fqn, service_id, offers, now, expires_at, max_offers_per_user, self.origin)
        return await self._run(plan, write=True)

    async def find_service(self, fqn: ServiceFqn, now: int) -> ServiceOffer:
        """See `Storage.find_service`."""
        return await self._run(_find_service(str(fqn), now))

    async def find_random_service(self, service: str, version: str, now: int) -> ServiceOffer:
        """See `Storage.find_random_service`."""
        return await self._run(_find_random(service, version, now))

    async def list_services(
        self, service: str, version: str, limit: int, offset: int, now: int
    ) -> list[ServiceOffer]:
        """See `Storage.list_services`."""
        return await self._run(_list_services(service, version, limit, offset, now))

    async def delete_service(self, fqn: ServiceFqn, username: str, now: int) -> None:
        """See `Storage.delete_service`."""
        await self._run(_delete_service(str(fqn), username, now, self.origin))

    async def answer_offer(self, offer_id: str, username: str, sdp: str, now: int) -> list[str]:
        """See `Storage.answer_offer`."""
        return await self._run(_answer(offer_id, username, sdp, now, self.origin))

    async def get_offer(self, offer_id: str, now: int) -> OfferRecord | None:
        """See `Storage.get_offer`."""
        return await self._run(_get_offer(offer_id, now))

    async def poll(
        self, username: str, since: int, now: int
    ) -> tuple[list[AnswerRecord], list[IceRecord]]:
        """See `Storage.poll`."""
        return await self._run(_poll(username, since, now))

    async def add_ice_candidates(
        self,
        offer_id: str,
        username: str,
        candidates: Sequence[str],
        now: int,
        max_per_offer: int,
    ) -> list[str]:
        """See `Storage.add_ice_candidates`."""
        plan = _add_ice(offer_id, username, candidates, now, max_per_offer, self.origin)
        return await self._run(plan, write=True)

    async def get_ice_candidates(
        self, offer_id: str, username: str, since: int, now: int
    ) -> list[tuple[str, int]]:
        """See `Storage.get_ice_candidates`."""
        return await self._run(_get_ice(offer_id, username, since, now))

    async def count_live_offers(self, now: int) -> int:
        """See `Storage.count_live_offers`."""
        return await self._run(_count_live(now))

    async def overview(self, limit: int, offset: int, now: int) -> StateOverview:
        """See `Storage.overview`."""
        return await self._run(_overview(limit, offset, now))

    async def cleanup(self, now: int) -> CleanupCounts:
        """See `Storage.cleanup`."""
        return await self._run(_cleanup(now), write=True)
