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
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from rondevu_server import sql
from rondevu_server.sql import Conflict, Fetch, Plan, PlanStorage

__all__ = ["SqliteStorage"]

_T = TypeVar("_T")

# Version n of the schema is _MIGRATIONS[n-1]; PRAGMA user_version records where we are.
_MIGRATIONS: tuple[str, ...] = (
    sql.SCHEMA_V1.format(int="INTEGER", serial="INTEGER PRIMARY KEY"),
    sql.SCHEMA_V2,
    sql.SCHEMA_V3,
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
                if text is None:
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

    async def close(self) -> None:
        """Close the connection on its own thread, then stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
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
