"""PostgreSQL backend: asyncpg with its own connection pool, for several server processes.

The storage logic is shared with SQLite (`rondevu_server.sql`); this module runs its
plans, each on one pooled connection, the three with several writes in one
transaction.  Where two processes could race, the database decides:
- publishService holds a transaction-scoped advisory lock on the owner's name, so two
  publishes by one user (same FQN, or the per-user offer count) run one after the other;
  an offer id taken concurrently by someone else surfaces as a unique violation and
  becomes the same clean refusal as a visible one (S5);
- answerOffer is a conditional ``UPDATE ... WHERE answerer_username IS NULL``; row locks
  make exactly one concurrent caller win (S3);
- addIceCandidates locks the offer row (``FOR UPDATE``) while it assigns ``createdAt``,
  so values are strictly increasing per offer *in commit order*: a reader can never see
  a later value before an earlier one is visible (B5); it counts the offer's candidates
  against the per-offer cap in a later statement of the same transaction, whose
  snapshot includes every writer it waited for.

Reads and single-statement writes run without an explicit transaction (one round trip
each).  asyncpg prepares and caches every statement per connection.

The schema lives in ``schema`` (created if missing) or the DSN's default search path,
and is created or migrated at open under an advisory lock, so processes may start
together.

Wake-ups across processes (long polling): a write that wakes held calls sends
``NOTIFY`` on the deployment's channel (`rondevu_server.sql.WAKE_CHANNEL`) in its own
transaction, so PostgreSQL delivers it at commit, to every listener.  `listen` keeps
one dedicated connection (outside the pool) in ``LISTEN`` on it, skips this process's
own notifications (it woke its waiters directly) and hands the rest to the server.
Should that connection drop, it reconnects with backoff and then wakes every held call
once, since notifications sent meanwhile are lost; until then held calls still end at
their deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from rondevu_server import sql
from rondevu_server.longpoll import WakeSink
from rondevu_server.sql import Conflict, Fetch, Plan, PlanStorage

__all__ = ["PostgresStorage"]

log = logging.getLogger("rondevu_server")

_T = TypeVar("_T")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_MIGRATION_LOCK = 0x52444E56  # "RDNV": serialises schema set-up across processes
_RECONNECT_S = (0.1, 5.0)  # the listener's first and longest wait between attempts

_MIGRATIONS: tuple[str, ...] = (
    sql.SCHEMA_V1.format(int="BIGINT", serial="BIGSERIAL PRIMARY KEY"),
    sql.SCHEMA_V2,
    sql.SCHEMA_V3,
)


async def _drive(conn: Any, plan: Plan[_T]) -> _T:
    """Run ``plan``'s steps on ``conn``, one round trip each."""
    result: Any = None
    conflict: Conflict | None = None
    while True:
        try:
            step = plan.throw(conflict) if conflict is not None else plan.send(result)
        except StopIteration as stop:
            value: _T = stop.value
            return value
        conflict = None
        statement, fetch, args = step
        text = statement.postgres
        try:
            if text is None:
                result = None
            elif fetch is Fetch.ONE:
                result = await conn.fetchrow(text, *args)
            elif fetch is Fetch.ALL:
                result = await conn.fetch(text, *args)
            elif fetch is Fetch.VALUE:
                result = await conn.fetchval(text, *args)
            elif fetch is Fetch.COUNT:  # the command tag, e.g. "DELETE 3"
                result = int((await conn.execute(text, *args)).rpartition(" ")[2])
            else:
                result = await conn.executemany(text, args)
        except asyncpg.UniqueViolationError as error:
            conflict = Conflict(str(error))


async def _keep_session(conn: Any) -> None:
    """Pool reset on release: nothing beyond asyncpg's own rollback of an open
    transaction.  The default also sends ``RESET ALL; UNLISTEN *; CLOSE ALL;
    pg_advisory_unlock_all()`` - one more round trip per call - but this backend never
    changes session state: no SET, LISTEN or cursors, only transaction-scoped locks."""


class PostgresStorage(PlanStorage):
    """`Storage` on PostgreSQL through an asyncpg pool."""

    def __init__(
        self, pool: asyncpg.Pool, *, dsn: str = "", settings: dict[str, str] | None = None
    ) -> None:
        super().__init__()
        self._pool = pool
        self._dsn = dsn
        self._settings = dict(settings or {})
        self._listener: asyncio.Task[None] | None = None

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
            dsn,
            min_size=1,
            max_size=max(1, pool_size),
            server_settings=settings,
            reset=_keep_session,
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                await _migrate(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, dsn=dsn, settings=settings)

    async def close(self) -> None:
        """Stop listening and close every pooled connection."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._pool.close()

    async def _run(self, plan: Plan[_T], *, write: bool = False) -> _T:
        async with self._pool.acquire() as conn:
            if not write:
                return await _drive(conn, plan)
            async with conn.transaction():
                return await _drive(conn, plan)

    async def listen(self, sink: WakeSink) -> None:
        """See `Storage.listen`: ``LISTEN`` on a dedicated connection, kept up."""
        if self._listener is not None:
            return
        conn = await self._listening_connection(sink)
        self._listener = asyncio.get_running_loop().create_task(self._keep_listening(sink, conn))

    async def _listening_connection(self, sink: WakeSink) -> Any:
        conn = await asyncpg.connect(self._dsn, server_settings=self._settings)
        try:
            channel = await conn.fetchval(f"SELECT {sql.WAKE_CHANNEL}")

            def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
                origin, keys = sql.parse_wake_payload(payload)
                if origin != self.origin:
                    sink.wake(keys)

            await conn.add_listener(channel, on_notify)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _keep_listening(self, sink: WakeSink, conn: Any) -> None:
        """Hold ``conn`` until it drops, then reconnect (with backoff) and wake all."""
        try:
            while True:
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await lost.wait()
                log.warning("wake-up listener disconnected; reconnecting")
                conn = None
                delay = _RECONNECT_S[0]
                while conn is None:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RECONNECT_S[1])
                    with contextlib.suppress(
                        OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError
                    ):
                        conn = await self._listening_connection(sink)
                sink.wake_all()  # what was sent while disconnected is lost: re-read
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)


async def _migrate(conn: Any) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
    await conn.execute("CREATE TABLE IF NOT EXISTS rondevu_schema (version INTEGER NOT NULL)")
    version = await conn.fetchval("SELECT max(version) FROM rondevu_schema") or 0
    for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
        await conn.execute(script)
        await conn.execute("INSERT INTO rondevu_schema (version) VALUES ($1)", number)
