"""SQLite backend: the stdlib ``sqlite3`` module on one dedicated thread.

Every storage method is one plain function run on a single-thread executor, so a call
costs one thread hop however many statements it runs (``:memory:`` skips the hop: it
never waits on I/O, so its functions run inline on the event loop), and all work is
serialised on one connection: each write is a ``BEGIN IMMEDIATE`` transaction, which
makes publish atomic (S5) and answerOffer's conditional update race-free (S3).  File
databases use WAL and ``synchronous=NORMAL`` (durable at checkpoints, never corrupt);
``:memory:`` is the default, as in the original.

The schema is created (or migrated, see `_MIGRATIONS`) when the storage opens.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

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

__all__ = ["SqliteStorage"]

_T = TypeVar("_T")

# Version n of the schema is _MIGRATIONS[n-1]; PRAGMA user_version records where we are.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE usernames (
        username TEXT PRIMARY KEY,
        public_key TEXT NOT NULL UNIQUE,
        claimed_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        last_used INTEGER NOT NULL,
        CHECK (length(username) >= 3 AND length(username) <= 32)
    );
    CREATE INDEX idx_usernames_expires ON usernames(expires_at);
    CREATE TABLE services (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        service_fqn TEXT NOT NULL UNIQUE,
        service_name TEXT NOT NULL,
        version TEXT NOT NULL,
        username TEXT NOT NULL REFERENCES usernames(username) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX idx_services_name ON services(service_name, version, created_at);
    CREATE INDEX idx_services_username ON services(username);
    CREATE INDEX idx_services_expires ON services(expires_at);
    CREATE TABLE offers (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        username TEXT NOT NULL,
        service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
        sdp TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        answerer_username TEXT,
        answer_sdp TEXT,
        answered_at INTEGER,
        ice_last INTEGER
    );
    CREATE INDEX idx_offers_username ON offers(username);
    CREATE INDEX idx_offers_service ON offers(service_id);
    CREATE INDEX idx_offers_expires ON offers(expires_at);
    CREATE TABLE ice_candidates (
        id INTEGER PRIMARY KEY,
        offer_id TEXT NOT NULL REFERENCES offers(id) ON DELETE CASCADE,
        username TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('offerer', 'answerer')),
        candidate TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX idx_ice_offer ON ice_candidates(offer_id, created_at);
    """,
)

_SERVICE_COLUMNS = "s.id, s.username, s.service_fqn, s.created_at, s.expires_at"
_FIRST_OFFER = """
    SELECT id, sdp FROM offers
    WHERE service_id = ? AND answerer_username IS NULL AND expires_at > ?
    ORDER BY created_at, seq LIMIT 1
"""


def _service_offer(service: Sequence[Any], offer: Sequence[Any]) -> ServiceOffer:
    return ServiceOffer(
        service_id=service[0],
        username=service[1],
        service_fqn=service[2],
        created_at=service[3],
        expires_at=service[4],
        offer_id=offer[0],
        sdp=offer[1],
    )


class SqliteStorage:
    """`Storage` on a SQLite database (``:memory:`` or a file path)."""

    def __init__(
        self, conn: sqlite3.Connection, executor: ThreadPoolExecutor, *, inline: bool = False
    ) -> None:
        self._conn = conn
        self._executor = executor
        self._inline = inline
        self._closed = False

    @classmethod
    async def open(cls, path: str) -> SqliteStorage:
        """Open (creating or migrating the schema) the database at ``path``."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rondevu-sqlite")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        # An in-memory database never waits on I/O: its statements take microseconds, so
        # running them on the event loop is cheaper than a thread hop (measured in bench/).
        return cls(conn, executor, inline=path == ":memory:")

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._inline:
            return fn(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        """Close the connection on its own thread, then stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._inline = False  # close on the connection's own thread
        await self._run(self._conn.close)
        self._executor.shutdown(wait=True)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- usernames ------------------------------------------------------------------

    async def get_user(self, username: str, now: int) -> UserRecord | None:
        """See `Storage.get_user`."""
        return await self._run(self._get_user, username, now)

    def _get_user(self, username: str, now: int) -> UserRecord | None:
        row = self._conn.execute(
            "SELECT public_key, claimed_at, expires_at FROM usernames"
            " WHERE username = ? AND expires_at > ?",
            (username, now),
        ).fetchone()
        if row is None:
            return None
        return UserRecord(
            username=username, public_key=row[0], claimed_at=row[1], expires_at=row[2]
        )

    async def claim_username(self, username: str, public_key: str, now: int) -> ClaimOutcome:
        """See `Storage.claim_username`."""
        return await self._run(self._claim, username, public_key, now)

    def _claim(self, username: str, public_key: str, now: int) -> ClaimOutcome:
        try:
            with self._write() as conn:
                row = conn.execute(
                    "INSERT INTO usernames (username, public_key, claimed_at, expires_at,"
                    " last_used) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT(username) DO UPDATE SET expires_at = excluded.expires_at,"
                    " last_used = excluded.last_used"
                    " WHERE usernames.public_key = excluded.public_key"
                    " RETURNING username",
                    (username, public_key, now, now + USERNAME_TTL_MS, now),
                ).fetchone()
        except sqlite3.IntegrityError:
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
        return await self._run(
            self._publish, fqn, service_id, offers, now, expires_at, max_offers_per_user
        )

    def _publish(
        self,
        fqn: ServiceFqn,
        service_id: str,
        offers: Sequence[tuple[str, str]],
        now: int,
        expires_at: int,
        max_offers_per_user: int,
    ) -> Publication:
        username = fqn.username
        assert username is not None
        fqn_text = str(fqn)
        ids = [offer_id for offer_id, _ in offers]
        marks = ",".join("?" * len(ids))
        with self._write() as conn:
            conn.execute("DELETE FROM services WHERE service_fqn = ?", (fqn_text,))
            live = conn.execute(
                f"SELECT 1 FROM offers WHERE id IN ({marks}) AND expires_at > ? LIMIT 1",
                (*ids, now),
            ).fetchone()
            if live is not None:
                raise Rejected(messages.OFFER_EXISTS)
            conn.execute(f"DELETE FROM offers WHERE id IN ({marks})", ids)
            (held,) = conn.execute(
                "SELECT COUNT(*) FROM offers WHERE username = ? AND expires_at > ?",
                (username, now),
            ).fetchone()
            if held + len(offers) > max_offers_per_user:
                raise Rejected(messages.USER_OFFER_LIMIT.format(limit=max_offers_per_user))
            conn.execute(
                "INSERT INTO services (id, service_fqn, service_name, version, username,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (service_id, fqn_text, fqn.service, fqn.version, username, now, expires_at),
            )
            conn.executemany(
                "INSERT INTO offers (id, username, service_id, sdp, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(oid, username, service_id, sdp, now, expires_at) for oid, sdp in offers],
            )
            conn.execute(
                "UPDATE usernames SET last_used = ?, expires_at = ? WHERE username = ?",
                (now, now + USERNAME_TTL_MS, username),
            )
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
        return await self._run(self._find_service, str(fqn), now)

    def _find_service(self, fqn_text: str, now: int) -> ServiceOffer:
        conn = self._conn
        service = conn.execute(
            f"SELECT {_SERVICE_COLUMNS} FROM services s"
            " WHERE s.service_fqn = ? AND s.expires_at > ?",
            (fqn_text, now),
        ).fetchone()
        if service is None:
            raise Rejected(messages.SERVICE_NOT_FOUND)
        offer = conn.execute(_FIRST_OFFER, (service[0], now)).fetchone()
        if offer is None:
            raise Rejected(messages.NO_AVAILABLE_OFFERS)
        return _service_offer(service, offer)

    async def find_random_service(self, service: str, version: str, now: int) -> ServiceOffer:
        """See `Storage.find_random_service`."""
        return await self._run(self._find_random, service, version, now)

    def _find_random(self, name: str, version: str, now: int) -> ServiceOffer:
        conn = self._conn
        service = conn.execute(
            f"SELECT {_SERVICE_COLUMNS} FROM services s JOIN offers o ON o.service_id = s.id"
            " WHERE s.service_name = ? AND s.version = ? AND s.expires_at > ?"
            " AND o.answerer_username IS NULL AND o.expires_at > ?"
            " ORDER BY RANDOM() LIMIT 1",
            (name, version, now, now),
        ).fetchone()
        if service is None:
            raise Rejected(messages.NO_SERVICES_FOUND)
        offer = conn.execute(_FIRST_OFFER, (service[0], now)).fetchone()
        if offer is None:  # cannot happen on one connection; kept for the contract
            raise Rejected(messages.NO_AVAILABLE_OFFERS)
        return _service_offer(service, offer)

    async def list_services(
        self, service: str, version: str, limit: int, offset: int, now: int
    ) -> list[ServiceOffer]:
        """See `Storage.list_services`."""
        return await self._run(self._list, service, version, limit, offset, now)

    def _list(
        self, name: str, version: str, limit: int, offset: int, now: int
    ) -> list[ServiceOffer]:
        # The original scans the 1000 newest services, then pages: same window here.
        limit = max(0, min(limit, 1000 - offset))
        rows = self._conn.execute(
            f"SELECT {_SERVICE_COLUMNS}, o.id, o.sdp FROM services s"
            " JOIN offers o ON o.seq = (SELECT f.seq FROM offers f WHERE f.service_id = s.id"
            "   AND f.answerer_username IS NULL AND f.expires_at > ?"
            "   ORDER BY f.created_at, f.seq LIMIT 1)"
            " WHERE s.service_name = ? AND s.version = ? AND s.expires_at > ?"
            " ORDER BY s.created_at DESC, s.seq DESC LIMIT ? OFFSET ?",
            (now, name, version, now, limit, offset),
        ).fetchall()
        return [_service_offer(row[:5], row[5:]) for row in rows]

    async def delete_service(self, fqn: ServiceFqn, username: str, now: int) -> None:
        """See `Storage.delete_service`."""
        await self._run(self._delete_service, str(fqn), username, now)

    def _delete_service(self, fqn_text: str, username: str, now: int) -> None:
        with self._write() as conn:
            row = conn.execute(
                "SELECT seq, username FROM services WHERE service_fqn = ? AND expires_at > ?",
                (fqn_text, now),
            ).fetchone()
            if row is None:
                raise Rejected(messages.SERVICE_NOT_FOUND)
            if row[1] != username:
                raise Rejected(messages.SERVICE_NOT_OWNED)
            conn.execute("DELETE FROM services WHERE seq = ?", (row[0],))

    # -- offers and answers ---------------------------------------------------------

    async def answer_offer(self, offer_id: str, username: str, sdp: str, now: int) -> None:
        """See `Storage.answer_offer`."""
        await self._run(self._answer, offer_id, username, sdp, now)

    def _answer(self, offer_id: str, username: str, sdp: str, now: int) -> None:
        with self._write() as conn:
            updated = conn.execute(
                "UPDATE offers SET answerer_username = ?, answer_sdp = ?, answered_at = ?"
                " WHERE id = ? AND expires_at > ? AND answerer_username IS NULL",
                (username, sdp, now, offer_id, now),
            ).rowcount
            if updated == 0:
                live = conn.execute(
                    "SELECT 1 FROM offers WHERE id = ? AND expires_at > ?", (offer_id, now)
                ).fetchone()
                raise Rejected(
                    messages.OFFER_ALREADY_ANSWERED if live else messages.OFFER_NOT_FOUND
                )
            # Candidates other would-be answerers sent before the answer can never be
            # shown to anyone (S4), so they are dropped now rather than at expiry.
            conn.execute(
                "DELETE FROM ice_candidates WHERE offer_id = ? AND role = 'answerer'"
                " AND username != ?",
                (offer_id, username),
            )

    async def get_offer(self, offer_id: str, now: int) -> OfferRecord | None:
        """See `Storage.get_offer`."""
        return await self._run(self._get_offer, offer_id, now)

    def _get_offer(self, offer_id: str, now: int) -> OfferRecord | None:
        row = self._conn.execute(
            "SELECT username, service_id, answerer_username, answer_sdp, answered_at"
            " FROM offers WHERE id = ? AND expires_at > ?",
            (offer_id, now),
        ).fetchone()
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
        return await self._run(self._poll, username, since, now)

    def _poll(
        self, username: str, since: int, now: int
    ) -> tuple[list[AnswerRecord], list[IceRecord]]:
        conn = self._conn
        answers = list(
            map(
                AnswerRecord._make,
                conn.execute(
                    "SELECT id, service_id, answerer_username, answer_sdp, answered_at"
                    " FROM offers WHERE username = ? AND expires_at > ? AND answered_at > ?"
                    " ORDER BY answered_at DESC, seq DESC",
                    (username, now, since),
                ),
            )
        )
        ice = list(
            map(
                IceRecord._make,
                conn.execute(
                    "SELECT c.id, c.offer_id, c.username, c.role, c.candidate, c.created_at"
                    " FROM offers o JOIN ice_candidates c ON c.offer_id = o.id"
                    " WHERE o.username = ? AND o.expires_at > ?"
                    " AND o.answerer_username IS NOT NULL"
                    " AND c.role = 'answerer' AND c.username = o.answerer_username"
                    " AND c.created_at > ?"
                    " ORDER BY o.created_at DESC, o.seq DESC, c.created_at, c.id",
                    (username, now, since),
                ),
            )
        )
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
        await self._run(self._add_ice, offer_id, username, candidates, now, max_per_offer)

    def _add_ice(
        self,
        offer_id: str,
        username: str,
        candidates: Sequence[str],
        now: int,
        max_per_offer: int,
    ) -> None:
        with self._write() as conn:
            offer = conn.execute(
                "SELECT username, answerer_username, ice_last FROM offers"
                " WHERE id = ? AND expires_at > ?",
                (offer_id, now),
            ).fetchone()
            if offer is None:
                raise Rejected(messages.OFFER_NOT_FOUND)
            owner, answerer, last = offer
            if username == owner:
                role = "offerer"
            elif answerer is None or answerer == username:
                role = "answerer"
            else:
                raise Rejected(messages.NOT_AUTHORIZED_OFFER)
            (held,) = conn.execute(
                "SELECT COUNT(*) FROM ice_candidates WHERE offer_id = ? AND username = ?",
                (offer_id, username),
            ).fetchone()
            if held + len(candidates) > max_per_offer:
                raise Rejected(messages.OFFER_CANDIDATE_LIMIT.format(limit=max_per_offer))
            stamps = next_ice_timestamps(last, now, len(candidates))
            conn.executemany(
                "INSERT INTO ice_candidates (offer_id, username, role, candidate, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (offer_id, username, role, text, stamp)
                    for text, stamp in zip(candidates, stamps, strict=True)
                ],
            )
            conn.execute("UPDATE offers SET ice_last = ? WHERE id = ?", (stamps[-1], offer_id))

    async def get_ice_candidates(
        self, offer_id: str, username: str, since: int, now: int
    ) -> list[tuple[str, int]]:
        """See `Storage.get_ice_candidates`."""
        return await self._run(self._get_ice, offer_id, username, since, now)

    def _get_ice(self, offer_id: str, username: str, since: int, now: int) -> list[tuple[str, int]]:
        conn = self._conn
        offer = conn.execute(
            "SELECT username, answerer_username FROM offers WHERE id = ? AND expires_at > ?",
            (offer_id, now),
        ).fetchone()
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
        return conn.execute(
            "SELECT candidate, created_at FROM ice_candidates"
            " WHERE offer_id = ? AND role = ? AND username = ? AND created_at > ?"
            " ORDER BY created_at, id",
            (offer_id, role, sender, since),
        ).fetchall()

    # -- housekeeping ---------------------------------------------------------------

    async def count_live_offers(self, now: int) -> int:
        """See `Storage.count_live_offers`."""
        return await self._run(self._count_live, now)

    def _count_live(self, now: int) -> int:
        (count,) = self._conn.execute(
            "SELECT COUNT(*) FROM offers WHERE expires_at > ?", (now,)
        ).fetchone()
        return int(count)

    async def cleanup(self, now: int) -> CleanupCounts:
        """See `Storage.cleanup`."""
        return await self._run(self._cleanup, now)

    def _cleanup(self, now: int) -> CleanupCounts:
        with self._write() as conn:
            offers = conn.execute("DELETE FROM offers WHERE expires_at <= ?", (now,)).rowcount
            services = conn.execute("DELETE FROM services WHERE expires_at <= ?", (now,)).rowcount
            users = conn.execute("DELETE FROM usernames WHERE expires_at <= ?", (now,)).rowcount
        return CleanupCounts(offers=offers, services=services, usernames=users)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")
        if path != ":memory:" and not path.startswith("file::memory:"):
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
