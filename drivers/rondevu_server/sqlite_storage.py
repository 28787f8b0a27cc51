"""SQLite backend: the stdlib ``sqlite3`` module on one dedicated thread.

The storage logic is shared with PostgreSQL (`rondevu_server.sql`); this module runs its
plans.  Every storage method is one plan run as one plain function on a single-thread
executor, so a call costs one thread hop however many statements it runs (``:memory:``
skips the hop: it never waits on I/O, so its plans run inline on the event loop), and
all work is serialised on one connection.  Plans with several writes run in one
``BEGIN IMMEDIATE`` transaction, which makes publish atomic (S5); answerOffer's
conditional update is race-free on its own (S3).  File databases use WAL and
``synchronous=NORMAL`` (durable at checkpoints, never corrupt); ``:memory:`` is the
default, as in the original.

The schema is created (or migrated, see `_MIGRATIONS`) when the storage opens.

Wake-ups across processes on one file (long polling): a write that wakes held calls
adds a row to ``rondevu_wakes`` in its own commit.  While this process holds calls,
`listen` looks every `WAKE_CHECK_S` seconds whether another connection committed
anything (``PRAGMA data_version``, which costs no read of the database) and only then
reads the rows it has not seen, skipping its own.  So a wake-up written by another
process arrives within that interval, and an idle server does no work for it.
``:memory:`` is private to its process and writes no rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from rondevu_server import sql
from rondevu_server.longpoll import WakeSink
from rondevu_server.sql import Conflict, Fetch, Plan, PlanStorage

__all__ = ["WAKE_CHECK_S", "SqliteStorage"]

log = logging.getLogger("rondevu_server")

WAKE_CHECK_S = 0.02
"""How often a process holding calls looks for other processes' wake-ups (seconds):
the cross-process wake-up latency on SQLite is at most this (plus a read)."""

_T = TypeVar("_T")

# Version n of the schema is _MIGRATIONS[n-1]; PRAGMA user_version records where we are.
_MIGRATIONS: tuple[str, ...] = (
    sql.SCHEMA_V1.format(int="INTEGER", serial="INTEGER PRIMARY KEY"),
    sql.SCHEMA_V2,
    sql.SCHEMA_V3,
    sql.SCHEMA_SQLITE_WAKES,
)


def _one(conn: sqlite3.Connection, text: str, args: Sequence[Any]) -> Any:
    return conn.execute(text, args).fetchone()


def _all(conn: sqlite3.Connection, text: str, args: Sequence[Any]) -> Any:
    return conn.execute(text, args).fetchall()


def _value(conn: sqlite3.Connection, text: str, args: Sequence[Any]) -> Any:
    row = conn.execute(text, args).fetchone()
    return None if row is None else row[0]


def _count(conn: sqlite3.Connection, text: str, args: Sequence[Any]) -> Any:
    return conn.execute(text, args).rowcount


def _many(conn: sqlite3.Connection, text: str, args: Sequence[Any]) -> Any:
    conn.executemany(text, args)


_RUN: dict[Fetch, Callable[[sqlite3.Connection, str, Sequence[Any]], Any]] = {
    Fetch.ONE: _one,
    Fetch.ALL: _all,
    Fetch.VALUE: _value,
    Fetch.COUNT: _count,
    Fetch.MANY: _many,
}


class SqliteStorage(PlanStorage):
    """`Storage` on a SQLite database (``:memory:`` or a file path)."""

    def __init__(
        self, conn: sqlite3.Connection, executor: ThreadPoolExecutor, *, inline: bool = False
    ) -> None:
        super().__init__()
        self._conn = conn
        self._executor = executor
        self._inline = inline
        self._closed = False
        self._listener: asyncio.Task[None] | None = None

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

    async def _run(self, plan: Plan[_T], *, write: bool = False) -> _T:
        if self._inline:
            return self._drive(plan, write)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._drive, plan, write)

    def _drive(self, plan: Plan[_T], write: bool) -> _T:
        """Run ``plan``'s steps on the connection (in a transaction when ``write``)."""
        conn = self._conn
        if write:
            conn.execute("BEGIN IMMEDIATE")
        try:
            result: Any = None
            conflict: Conflict | None = None
            while True:
                try:
                    step = plan.throw(conflict) if conflict is not None else plan.send(result)
                except StopIteration as stop:
                    value: _T = stop.value
                    break
                conflict = None
                statement, fetch, args = step
                text = statement.sqlite
                if text is None or (statement.announce and self._inline):
                    result = None
                    continue
                if statement.json_arrays:
                    args = [
                        orjson.dumps(arg).decode() if isinstance(arg, list) else arg for arg in args
                    ]
                try:
                    result = _RUN[fetch](conn, text, args)
                except sqlite3.IntegrityError as error:
                    if "UNIQUE" not in str(error):
                        raise
                    conflict = Conflict(str(error))
        except BaseException:
            if write:
                conn.execute("ROLLBACK")
            raise
        if write:
            conn.execute("COMMIT")
        return value

    async def listen(self, sink: WakeSink) -> None:
        """See `Storage.listen`: other processes' rows of ``rondevu_wakes`` (a file only)."""
        if self._inline or self._listener is not None:
            return
        loop = asyncio.get_running_loop()
        mark = await loop.run_in_executor(self._executor, self._wake_mark)
        self._listener = loop.create_task(self._watch(sink, *mark))

    def _wake_mark(self) -> tuple[int, int]:
        """``(data_version, newest wake row)`` now: where listening starts."""
        (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        (seq,) = self._conn.execute("SELECT coalesce(max(seq), 0) FROM rondevu_wakes").fetchone()
        return version, seq

    def _new_wakes(self, version: int, seq: int) -> tuple[int, int, list[str]]:
        """The keys of wake rows after ``seq`` that other processes wrote, when another
        connection committed since ``version``; the new ``(version, seq)`` with them."""
        (now_version,) = self._conn.execute("PRAGMA data_version").fetchone()
        if now_version == version:
            return version, seq, []
        rows = self._conn.execute(
            "SELECT seq, payload FROM rondevu_wakes WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()
        keys: list[str] = []
        for _, payload in rows:
            origin, woken = sql.parse_wake_payload(payload)
            if origin != self.origin:
                keys.extend(woken)
        return now_version, rows[-1][0] if rows else seq, keys

    async def _watch(self, sink: WakeSink, version: int, seq: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WAKE_CHECK_S)
            if not sink.waiting:
                continue  # the rows wait: nothing to wake now, and none is ever lost
            try:
                version, seq, keys = await loop.run_in_executor(
                    self._executor, self._new_wakes, version, seq
                )
            except sqlite3.Error:
                log.exception("reading wake-ups failed")
                continue
            if keys:
                sink.wake(keys)

    async def close(self) -> None:
        """Close the connection on its own thread, then stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)


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
