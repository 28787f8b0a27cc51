"""Discovery reads a service's unanswered offers through their own index.

Every "first available offer" lookup (direct and paginated getService) and random
discovery must cost a few index probes per service, not a pass over the live offers of
the whole table. On PostgreSQL the bad plan appeared on fresh tables, before autovacuum
had gathered statistics, so the PostgreSQL check runs right after a bulk insert.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from rondevu_server import sql
from rondevu_server.postgres_storage import PostgresStorage
from rondevu_server.sqlite_storage import SqliteStorage
from tests.rondevu_server_testing import drop_schema, postgres_dsn

NOW = 1_765_700_000_000
LOOKUPS = {
    "direct": (sql._FIND_SERVICE, ("svc:1.0.0@user-3", NOW)),
    "random": (sql._FIND_RANDOM, ("svc", "1.0.0", NOW)),
    "paginated": (sql._LIST_SERVICES, (NOW, "svc", "1.0.0", 10, 0)),
}


def _seed_statements() -> list[tuple[str, Sequence[tuple[Any, ...]]]]:
    """20 users with one service of 50 offers each; every third offer answered."""
    users = [(f"user-{i}", f"key-{i}", NOW, NOW + 10**9, NOW) for i in range(20)]
    services = [
        (f"s{i}", f"svc:1.0.0@user-{i}", "svc", "1.0.0", f"user-{i}", NOW, NOW + 10**9)
        for i in range(20)
    ]
    offers = [
        (f"o{i}-{k}", f"user-{i}", f"s{i}", "v=0", NOW + k, NOW + 10**9, "x" if k % 3 else None)
        for i in range(20)
        for k in range(50)
    ]
    return [
        ("INSERT INTO usernames VALUES ($1, $2, $3, $4, $5)", users),
        (
            "INSERT INTO services (id, service_fqn, service_name, version, username,"
            " created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            services,
        ),
        (
            "INSERT INTO offers (id, username, service_id, sdp, created_at, expires_at,"
            " answerer_username) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            offers,
        ),
    ]


def test_sqlite_lookups_use_the_unanswered_offer_index() -> None:
    async def plans() -> dict[str, str]:
        storage = await SqliteStorage.open(":memory:")
        conn: sqlite3.Connection = storage._conn
        try:
            for text, rows in _seed_statements():
                conn.executemany(re.sub(r"\$(\d+)", r"?\1", text), rows)
            return {
                name: " | ".join(
                    row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + str(stmt.sqlite), args)
                )
                for name, (stmt, args) in LOOKUPS.items()
            }
        finally:
            await storage.close()

    for name, plan in asyncio.run(plans()).items():
        assert "idx_offers_free" in plan, (name, plan)
        assert "SCAN o" not in plan, (name, plan)


@pytest.mark.postgres
def test_postgres_lookups_use_the_unanswered_offer_index() -> None:
    dsn = postgres_dsn()
    schema = f"rdv_test_{uuid.uuid4().hex[:12]}"

    async def plans() -> dict[str, list[dict[str, Any]]]:
        storage = await PostgresStorage.open(dsn, schema=schema, pool_size=1)
        await storage.close()
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            for text, rows in _seed_statements():
                await conn.executemany(text, rows)
            found = {}
            for name, (stmt, args) in LOOKUPS.items():
                plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + str(stmt.postgres), *args)
                found[name] = list(_nodes(json.loads(plan)[0]["Plan"]))
            return found
        finally:
            await conn.close()

    try:
        found = asyncio.run(plans())
    finally:
        drop_schema(schema)
    for name, nodes in found.items():
        indexes = {node.get("Index Name") for node in nodes}
        assert "idx_offers_free" in indexes, (name, nodes)
        assert "idx_offers_expires" not in indexes, (name, nodes)
        scans = {(node["Node Type"], node.get("Relation Name")) for node in nodes}
        assert ("Seq Scan", "offers") not in scans, (name, nodes)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a PostgreSQL JSON plan."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)
