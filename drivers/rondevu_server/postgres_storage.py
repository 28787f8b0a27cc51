"""PostgreSQL backend: asyncpg with its own connection pool, for several server processes.

Every storage method is one transaction on one pooled connection.  Where two processes
could race, the database decides:
- publishService holds a transaction-scoped advisory lock on the owner's name, so two
  publishes by one user (same FQN, or the per-user offer count) run one after the other;
  an offer id taken concurrently by someone else surfaces as a unique violation and
  becomes the same clean refusal as a visible one (S5);
- answerOffer is a conditional ``UPDATE ... WHERE answerer_username IS NULL``; row locks
  make exactly one concurrent caller win (S3);
- addIceCandidates locks the offer row (``FOR UPDATE``) while it assigns ``createdAt``,
  so values are strictly increasing per offer *in commit order*: a reader can never see
  a later value before an earlier one is visible (B5).

The schema lives in ``schema`` (created if missing) or the DSN's default search path,
and is created or migrated at open under an advisory lock, so processes may start
together.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from rondevu_core.fqn import ServiceFqn
from rondevu_core.server_rules import next_ice_timestamps
from rondevu_server import messages
from rondevu_server.storage import (
    USERNAME_TTL_MS,
    AnswerRecord,
    ClaimOutcome,
    CleanupCounts,
    IceRecord,
    OfferRecord,
    Publication,
    PublishedOffer,
    Rejected,
    ServiceOffer,
    UserRecord,
)

__all__ = ["PostgresStorage"]

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_MIGRATION_LOCK = 0x52444E56  # "RDNV": serialises schema set-up across processes

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE usernames (
        username TEXT PRIMARY KEY,
        public_key TEXT NOT NULL UNIQUE,
        claimed_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        last_used BIGINT NOT NULL,
        CHECK (length(username) >= 3 AND length(username) <= 32)
    );
    CREATE INDEX idx_usernames_expires ON usernames(expires_at);
    CREATE TABLE services (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        service_fqn TEXT NOT NULL UNIQUE,
        service_name TEXT NOT NULL,
        version TEXT NOT NULL,
        username TEXT NOT NULL REFERENCES usernames(username) ON DELETE CASCADE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX idx_services_name ON services(service_name, version, created_at);
    CREATE INDEX idx_services_username ON services(username);
    CREATE INDEX idx_services_expires ON services(expires_at);
    CREATE TABLE offers (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        username TEXT NOT NULL,
        service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
        sdp TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        answerer_username TEXT,
        answer_sdp TEXT,
        answered_at BIGINT,
        ice_last BIGINT
    );
    CREATE INDEX idx_offers_username ON offers(username);
    CREATE INDEX idx_offers_service ON offers(service_id);
    CREATE INDEX idx_offers_expires ON offers(expires_at);
    CREATE TABLE ice_candidates (
        id BIGSERIAL PRIMARY KEY,
        offer_id TEXT NOT NULL REFERENCES offers(id) ON DELETE CASCADE,
        username TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('offerer', 'answerer')),
        candidate TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX idx_ice_offer ON ice_candidates(offer_id, created_at);
    """,
)

_SERVICE_COLUMNS = "s.id, s.username, s.service_fqn, s.created_at, s.expires_at"
_FIRST_OFFER = """
    SELECT id, sdp FROM offers
    WHERE service_id = $1 AND answerer_username IS NULL AND expires_at > $2
    ORDER BY created_at, seq LIMIT 1
"""


def _service_offer(row: Any) -> ServiceOffer:
    return ServiceOffer(
        service_id=row[0],
        username=row[1],
        service_fqn=row[2],
        created_at=row[3],
        expires_at=row[4],
        offer_id=row[5],
        sdp=row[6],
    )


class PostgresStorage:
    """`Storage` on PostgreSQL through an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(
        cls, dsn: str, *, schema: str | None = None, pool_size: int = 10
    ) -> PostgresStorage:
        """Connect, create ``schema`` if given, and create or migrate the tables."""
        settings: dict[str, str] = {}
        if schema is not None:
            if not _SCHEMA_NAME.match(schema):
                raise ValueError("schema name must match [a-z_][a-z0-9_]*")
            settings["search_path"] = schema
            conn = await asyncpg.connect(dsn)
            try:
                # IF NOT EXISTS still races between processes starting together: serialise.
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            finally:
                await conn.close()
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=max(1, pool_size), server_settings=settings
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                await _migrate(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._pool.close()

    # -- usernames ------------------------------------------------------------------

    async def get_user(self, username: str, now: int) -> UserRecord | None:
        """See `Storage.get_user`."""
        row = await self._pool.fetchrow(
            "SELECT public_key, claimed_at, expires_at FROM usernames"
            " WHERE username = $1 AND expires_at > $2",
            username,
            now,
        )
        if row is None:
            return None
        return UserRecord(
            username=username, public_key=row[0], claimed_at=row[1], expires_at=row[2]
        )

    async def claim_username(self, username: str, public_key: str, now: int) -> ClaimOutcome:
        """See `Storage.claim_username`."""
        try:
            row = await self._pool.fetchrow(
                "INSERT INTO usernames (username, public_key, claimed_at, expires_at, last_used)"
                " VALUES ($1, $2, $3, $4, $3)"
                " ON CONFLICT (username) DO UPDATE SET expires_at = excluded.expires_at,"
                " last_used = excluded.last_used"
                " WHERE usernames.public_key = excluded.public_key"
                " RETURNING username",
                username,
                public_key,
                now,
                now + USERNAME_TTL_MS,
            )
        except asyncpg.UniqueViolationError:
            return ClaimOutcome.KEY_TAKEN
        return ClaimOutcome.CLAIMED if row is not None else ClaimOutcome.OTHER_KEY

    # -- services -------------------------------------------------------------------

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
        username = fqn.username
        assert username is not None
        fqn_text = str(fqn)
        ids = [offer_id for offer_id, _ in offers]
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('rondevu-user:' || $1))", username
                )
                await conn.execute("DELETE FROM services WHERE service_fqn = $1", fqn_text)
                live = await conn.fetchval(
                    "SELECT 1 FROM offers WHERE id = ANY($1::text[]) AND expires_at > $2 LIMIT 1",
                    ids,
                    now,
                )
                if live is not None:
                    raise Rejected(messages.OFFER_EXISTS)
                await conn.execute("DELETE FROM offers WHERE id = ANY($1::text[])", ids)
                held = await conn.fetchval(
                    "SELECT COUNT(*) FROM offers WHERE username = $1 AND expires_at > $2",
                    username,
                    now,
                )
                if held + len(offers) > max_offers_per_user:
                    raise Rejected(messages.USER_OFFER_LIMIT.format(limit=max_offers_per_user))
                await conn.execute(
                    "INSERT INTO services (id, service_fqn, service_name, version, username,"
                    " created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    service_id,
                    fqn_text,
                    fqn.service,
                    fqn.version,
                    username,
                    now,
                    expires_at,
                )
                await conn.executemany(
                    "INSERT INTO offers (id, username, service_id, sdp, created_at, expires_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    [(oid, username, service_id, sdp, now, expires_at) for oid, sdp in offers],
                )
                await conn.execute(
                    "UPDATE usernames SET last_used = $1, expires_at = $2 WHERE username = $3",
                    now,
                    now + USERNAME_TTL_MS,
                    username,
                )
        except asyncpg.UniqueViolationError:
            # Another process inserted the same offer id between our check and insert.
            raise Rejected(messages.OFFER_EXISTS) from None
        return Publication(
            service_id=service_id,
            username=username,
            service_fqn=fqn_text,
            created_at=now,
            expires_at=expires_at,
            offers=tuple(
                PublishedOffer(offer_id=oid, sdp=sdp, created_at=now, expires_at=expires_at)
                for oid, sdp in offers
            ),
        )

    async def find_service(self, fqn: ServiceFqn, now: int) -> ServiceOffer:
        """See `Storage.find_service`."""
        async with self._pool.acquire() as conn:
            service = await conn.fetchrow(
                f"SELECT {_SERVICE_COLUMNS} FROM services s"
                " WHERE s.service_fqn = $1 AND s.expires_at > $2",
                str(fqn),
                now,
            )
            if service is None:
                raise Rejected(messages.SERVICE_NOT_FOUND)
            offer = await conn.fetchrow(_FIRST_OFFER, service[0], now)
        if offer is None:
            raise Rejected(messages.NO_AVAILABLE_OFFERS)
        return _service_offer((*service, *offer))

    async def find_random_service(self, service: str, version: str, now: int) -> ServiceOffer:
        """See `Storage.find_random_service`."""
        async with self._pool.acquire() as conn:
            found = await conn.fetchrow(
                f"SELECT {_SERVICE_COLUMNS} FROM services s JOIN offers o ON o.service_id = s.id"
                " WHERE s.service_name = $1 AND s.version = $2 AND s.expires_at > $3"
                " AND o.answerer_username IS NULL AND o.expires_at > $3"
                " ORDER BY random() LIMIT 1",
                service,
                version,
                now,
            )
            if found is None:
                raise Rejected(messages.NO_SERVICES_FOUND)
            offer = await conn.fetchrow(_FIRST_OFFER, found[0], now)
        if offer is None:  # answered by someone else in between
            raise Rejected(messages.NO_AVAILABLE_OFFERS)
        return _service_offer((*found, *offer))

    async def list_services(
        self, service: str, version: str, limit: int, offset: int, now: int
    ) -> list[ServiceOffer]:
        """See `Storage.list_services`."""
        limit = max(0, min(limit, 1000 - offset))
        rows = await self._pool.fetch(
            f"SELECT {_SERVICE_COLUMNS}, o.id, o.sdp FROM services s"
            " CROSS JOIN LATERAL (SELECT f.id, f.sdp FROM offers f WHERE f.service_id = s.id"
            "   AND f.answerer_username IS NULL AND f.expires_at > $1"
            "   ORDER BY f.created_at, f.seq LIMIT 1) o"
            " WHERE s.service_name = $2 AND s.version = $3 AND s.expires_at > $1"
            " ORDER BY s.created_at DESC, s.seq DESC LIMIT $4 OFFSET $5",
            now,
            service,
            version,
            limit,
            offset,
        )
        return [_service_offer(row) for row in rows]

    async def delete_service(self, fqn: ServiceFqn, username: str, now: int) -> None:
        """See `Storage.delete_service`."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT seq, username FROM services WHERE service_fqn = $1 AND expires_at > $2"
                " FOR UPDATE",
                str(fqn),
                now,
            )
            if row is None:
                raise Rejected(messages.SERVICE_NOT_FOUND)
            if row[1] != username:
                raise Rejected(messages.SERVICE_NOT_OWNED)
            await conn.execute("DELETE FROM services WHERE seq = $1", row[0])

    # -- offers and answers ---------------------------------------------------------

    async def answer_offer(self, offer_id: str, username: str, sdp: str, now: int) -> None:
        """See `Storage.answer_offer`."""
        async with self._pool.acquire() as conn, conn.transaction():
            won = await conn.fetchval(
                "UPDATE offers SET answerer_username = $1, answer_sdp = $2, answered_at = $3"
                " WHERE id = $4 AND expires_at > $3 AND answerer_username IS NULL"
                " RETURNING 1",
                username,
                sdp,
                now,
                offer_id,
            )
            if won is None:
                live = await conn.fetchval(
                    "SELECT 1 FROM offers WHERE id = $1 AND expires_at > $2", offer_id, now
                )
                raise Rejected(
                    messages.OFFER_ALREADY_ANSWERED if live else messages.OFFER_NOT_FOUND
                )
            await conn.execute(
                "DELETE FROM ice_candidates WHERE offer_id = $1 AND role = 'answerer'"
                " AND username != $2",
                offer_id,
                username,
            )

    async def get_offer(self, offer_id: str, now: int) -> OfferRecord | None:
        """See `Storage.get_offer`."""
        row = await self._pool.fetchrow(
            "SELECT username, service_id, answerer_username, answer_sdp, answered_at"
            " FROM offers WHERE id = $1 AND expires_at > $2",
            offer_id,
            now,
        )
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

    async def poll(
        self, username: str, since: int, now: int
    ) -> tuple[list[AnswerRecord], list[IceRecord]]:
        """See `Storage.poll`."""
        async with self._pool.acquire() as conn:
            answer_rows = await conn.fetch(
                "SELECT id, service_id, answerer_username, answer_sdp, answered_at FROM offers"
                " WHERE username = $1 AND expires_at > $2 AND answered_at > $3"
                " ORDER BY answered_at DESC, seq DESC",
                username,
                now,
                since,
            )
            ice_rows = await conn.fetch(
                "SELECT c.id, c.offer_id, c.username, c.role, c.candidate, c.created_at"
                " FROM offers o JOIN ice_candidates c ON c.offer_id = o.id"
                " WHERE o.username = $1 AND o.expires_at > $2"
                " AND o.answerer_username IS NOT NULL"
                " AND c.role = 'answerer' AND c.username = o.answerer_username"
                " AND c.created_at > $3"
                " ORDER BY o.created_at DESC, o.seq DESC, c.created_at, c.id",
                username,
                now,
                since,
            )
        answers = list(map(AnswerRecord._make, answer_rows))
        ice = list(map(IceRecord._make, ice_rows))
        return answers, ice

    # -- ICE candidates -------------------------------------------------------------

    async def add_ice_candidates(
        self,
        offer_id: str,
        username: str,
        candidates: Sequence[str],
        now: int,
        max_per_offer: int,
    ) -> None:
        """See `Storage.add_ice_candidates`."""
        async with self._pool.acquire() as conn, conn.transaction():
            offer = await conn.fetchrow(
                "SELECT username, answerer_username, ice_last FROM offers"
                " WHERE id = $1 AND expires_at > $2 FOR UPDATE",
                offer_id,
                now,
            )
            if offer is None:
                raise Rejected(messages.OFFER_NOT_FOUND)
            owner, answerer, last = offer
            if username == owner:
                role = "offerer"
            elif answerer is None or answerer == username:
                role = "answerer"
            else:
                raise Rejected(messages.NOT_AUTHORIZED_OFFER)
            held = await conn.fetchval(
                "SELECT COUNT(*) FROM ice_candidates WHERE offer_id = $1 AND username = $2",
                offer_id,
                username,
            )
            if held + len(candidates) > max_per_offer:
                raise Rejected(messages.OFFER_CANDIDATE_LIMIT.format(limit=max_per_offer))
            stamps = next_ice_timestamps(last, now, len(candidates))
            await conn.executemany(
                "INSERT INTO ice_candidates (offer_id, username, role, candidate, created_at)"
                " VALUES ($1, $2, $3, $4, $5)",
                [
                    (offer_id, username, role, text, stamp)
                    for text, stamp in zip(candidates, stamps, strict=True)
                ],
            )
            await conn.execute(
                "UPDATE offers SET ice_last = $1 WHERE id = $2", stamps[-1], offer_id
            )

    async def get_ice_candidates(
        self, offer_id: str, username: str, since: int, now: int
    ) -> list[tuple[str, int]]:
        """See `Storage.get_ice_candidates`."""
        async with self._pool.acquire() as conn:
            offer = await conn.fetchrow(
                "SELECT username, answerer_username FROM offers WHERE id = $1 AND expires_at > $2",
                offer_id,
                now,
            )
            if offer is None:
                raise Rejected(messages.OFFER_NOT_FOUND)
            owner, answerer = offer
            if username == owner:
                if answerer is None:
                    return []
                role, sender = "answerer", answerer
            elif username == answerer:
                role, sender = "offerer", owner
            else:
                return []
            rows = await conn.fetch(
                "SELECT candidate, created_at FROM ice_candidates"
                " WHERE offer_id = $1 AND role = $2 AND username = $3 AND created_at > $4"
                " ORDER BY created_at, id",
                offer_id,
                role,
                sender,
                since,
            )
        return [(row[0], row[1]) for row in rows]

    # -- housekeeping ---------------------------------------------------------------

    async def count_live_offers(self, now: int) -> int:
        """See `Storage.count_live_offers`."""
        count = await self._pool.fetchval("SELECT COUNT(*) FROM offers WHERE expires_at > $1", now)
        return int(count)

    async def cleanup(self, now: int) -> CleanupCounts:
        """See `Storage.cleanup`."""
        async with self._pool.acquire() as conn, conn.transaction():
            offers = await conn.fetchval(
                "WITH d AS (DELETE FROM offers WHERE expires_at <= $1 RETURNING 1)"
                " SELECT COUNT(*) FROM d",
                now,
            )
            services = await conn.fetchval(
                "WITH d AS (DELETE FROM services WHERE expires_at <= $1 RETURNING 1)"
                " SELECT COUNT(*) FROM d",
                now,
            )
            users = await conn.fetchval(
                "WITH d AS (DELETE FROM usernames WHERE expires_at <= $1 RETURNING 1)"
                " SELECT COUNT(*) FROM d",
                now,
            )
        return CleanupCounts(offers=int(offers), services=int(services), usernames=int(users))


async def _migrate(conn: Any) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
    await conn.execute("CREATE TABLE IF NOT EXISTS rondevu_schema (version INTEGER NOT NULL)")
    version = await conn.fetchval("SELECT max(version) FROM rondevu_schema") or 0
    for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
        await conn.execute(script)
        await conn.execute("INSERT INTO rondevu_schema (version) VALUES ($1)", number)
