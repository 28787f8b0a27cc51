"""Abuse tests: every configurable bound gives its clear error, and honest traffic fits.

Bounds are set small per test so the checks stay fast; one test also proves the
defaults accept what an honest 0.18.x client sends.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from rondevu_server.config import ServerConfig
from tests.rondevu_server_testing import (
    BACKENDS,
    Peer,
    drop_schema,
    make_config,
    running_server,
    sdp,
    unique,
)


def test_defaults_accept_honest_traffic() -> None:
    with running_server("sqlite") as srv:
        alice, bob = Peer("a"), Peer("b")
        big = [{"sdp": sdp() + "a=x:" + "y" * (65_536 - 200)} for _ in range(100)]
        fqn = f"{unique('svc')}:1.0.0@{alice.username}"
        published = srv.ok(alice, "publishService", {"serviceFqn": fqn, "offers": big})
        offer = published["offers"][0]["offerId"]
        srv.ok(bob, "answerOffer", {"offerId": offer, "sdp": "x" * 65_536})
        candidate = {"candidate": "candidate:1 1 udp 2122260223 10.0.0.2 6000 typ host"}
        for _ in range(3):
            srv.ok(alice, "addIceCandidates", {"offerId": offer, "candidates": [candidate] * 100})
        got = srv.ok(bob, "getIceCandidates", {"offerId": offer})["candidates"]
        assert len(got) == 300
        batch = [bob.call("poll", {}, now=srv.clock.now) for _ in range(100)]
        assert all(r["success"] for r in srv.post(batch).json())


def test_body_size_limit() -> None:
    with running_server("sqlite", max_body_bytes=1000) as srv:
        reply = srv.http.post("/rpc", content=b"[" + b" " * 2000 + b"]")
        assert reply.status_code == 413
        assert reply.json() == {
            "success": False,
            "error": "Request body too large (max 1000 bytes)",
        }

        def chunks() -> Any:
            for _ in range(10):
                yield b" " * 200  # no content-length: the streamed body is cut off

        streamed = srv.http.post("/rpc", content=chunks())
        assert streamed.status_code == 413
        assert srv.http.post("/rpc", content=b" " * 990 + b"42").status_code == 200


@pytest.mark.parametrize("backend", BACKENDS)
def test_body_size_limit_in_process(backend: str) -> None:
    """`handle_rpc_body` (the in-process transport's entry) applies the same limit."""
    import asyncio

    from rondevu_server.server import RondevuServer

    config, schema = make_config(backend, max_body_bytes=1000)
    peer = Peer("b")
    now = 1_765_700_000_000

    async def run() -> list[tuple[int, Any]]:
        server = await RondevuServer.open(config, clock=lambda: now)
        try:
            call = json.dumps(peer.call("poll", {}, now=now)).encode()
            replies = []
            for body in (b"[" + b" " * 2000 + b"]", call.ljust(1001), call.ljust(1000)):
                status, reply = await server.handle_rpc_body(body)
                replies.append((status, json.loads(reply)))
            return replies
        finally:
            await server.aclose()

    try:
        too_big, just_over, at_limit = asyncio.run(run())
    finally:
        if schema is not None:
            drop_schema(schema)
    refused = {"success": False, "error": "Request body too large (max 1000 bytes)"}
    assert too_big == (413, refused)
    assert just_over == (413, refused)
    assert at_limit[0] == 200
    assert at_limit[1]["success"] is True


@pytest.mark.parametrize("backend", BACKENDS)
def test_sdp_and_candidate_bounds(backend: str) -> None:
    settings: dict[str, Any] = {
        "max_sdp_chars": 100,
        "max_candidates_per_request": 3,
        "max_candidates_per_offer": 5,
        "max_candidate_bytes": 50,
        "max_candidate_depth": 3,
    }
    with running_server(backend, **settings) as srv:
        alice, bob = Peer("a"), Peer("b")
        fqn = f"{unique('svc')}:1.0.0@{alice.username}"
        too_big = {"serviceFqn": fqn, "offers": [{"sdp": "v=0" + "x" * 100}]}
        assert srv.error(alice, "publishService", too_big) == (
            "Invalid offer at index 0: SDP too large (max 100 characters)"
        )
        offer = srv.publish(alice, unique("svc"))["offers"][0]["offerId"]
        assert srv.error(bob, "answerOffer", {"offerId": offer, "sdp": "y" * 101}) == (
            "SDP too large (max 64KB)"
        )

        def add(peer: Peer, candidates: list[Any]) -> str:
            return srv.error(peer, "addIceCandidates", {"offerId": offer, "candidates": candidates})

        assert add(alice, [{}] * 4) == "Too many candidates in one request (max 3)"
        assert add(alice, [{}, {"c": "x" * 60}]) == (
            "Invalid candidate at index 1: too large (max 50 bytes)"
        )
        assert add(alice, [{"a": {"b": {"c": {}}}}]) == (
            "Invalid candidate at index 0: nested too deeply (max depth 3)"
        )
        srv.ok(alice, "addIceCandidates", {"offerId": offer, "candidates": [{}] * 3})
        assert add(alice, [{}] * 3) == "Too many ICE candidates for this offer (max 5)"
        # the quota is per offer, every sender together (the others' share is 5 // 2)
        srv.ok(bob, "addIceCandidates", {"offerId": offer, "candidates": [{}] * 2})
        assert add(bob, [{}]) == "Too many ICE candidates for this offer (max 5)"


@pytest.mark.parametrize("backend", BACKENDS)
def test_offer_count_bounds(backend: str) -> None:
    with running_server(backend, max_offers_per_user=3, max_total_offers=5) as srv:
        alice, bob = Peer("a"), Peer("b")
        srv.publish(alice, unique("svc"), count=2)
        srv.publish(alice, unique("svc"), count=1)
        fqn = f"{unique('svc')}:1.0.0@{alice.username}"
        extra = {"serviceFqn": fqn, "offers": [{"sdp": sdp()}]}
        assert srv.error(alice, "publishService", extra) == (
            "Too many offers for this username (max 3)"
        )
        srv.publish(bob, unique("svc"), count=2)
        fqn = f"{unique('svc')}:1.0.0@{bob.username}"
        more = {"serviceFqn": fqn, "offers": [{"sdp": sdp()}]}
        assert srv.error(bob, "publishService", more) == (
            "Server offer capacity reached, try again later"
        )


def test_offers_per_request_setting() -> None:
    with running_server("sqlite", max_offers_per_request=2) as srv:
        alice = Peer("a")
        fqn = f"{unique('svc')}:1.0.0@{alice.username}"
        params = {"serviceFqn": fqn, "offers": [{"sdp": sdp()} for _ in range(3)]}
        assert srv.error(alice, "publishService", params) == "Too many offers (max 2)"


def test_rate_limit() -> None:
    settings: dict[str, Any] = {
        "rate_limit_per_second": 1.0,
        "rate_limit_burst": 3,
        "rate_limit_loopback": True,
    }
    with running_server("sqlite", **settings) as srv:
        statuses = [srv.http.get("/health").status_code for _ in range(2)]
        statuses += [srv.http.post("/rpc", content=b"42").status_code for _ in range(5)]
        assert statuses[:5] == [200, 200, 200, 200, 200]  # GETs are not limited
        assert statuses[5:] == [429, 429]
        reply = srv.http.post("/rpc", content=b"42")
        assert reply.json() == {"success": False, "error": "Rate limit exceeded, slow down"}
        srv.clock.advance(2_000)  # two tokens come back
        assert srv.http.post("/rpc", content=b"42").status_code == 200


def test_loopback_is_exempt_by_default() -> None:
    with running_server("sqlite", rate_limit_per_second=1.0, rate_limit_burst=1) as srv:
        assert {srv.http.post("/rpc", content=b"42").status_code for _ in range(20)} == {200}


def test_config_from_env() -> None:
    env = {
        "RONDEVU_PORT": "4000",
        "RONDEVU_MAX_SDP_CHARS": "10",
        "RONDEVU_CORS_ORIGINS": "https://a.example, https://b.example",
        "RONDEVU_RATE_LIMIT_LOOPBACK": "yes",
        "RONDEVU_RATE_LIMIT_PER_SECOND": "2.5",
    }
    config = ServerConfig.from_env(env, port=5000, db=None)
    assert config.port == 5000
    assert config.max_sdp_chars == 10
    assert config.cors_origins == ("https://a.example", "https://b.example")
    assert config.rate_limit_loopback is True
    assert config.rate_limit_per_second == 2.5
    assert "RONDEVU_DB" in config.env_names()
    with pytest.raises(ValueError, match="RONDEVU_PORT"):
        ServerConfig.from_env({"RONDEVU_PORT": "x"})


def test_sqlite_file_database_persists_and_migrates(tmp_path: Any) -> None:
    """A file database (thread mode, WAL) keeps claims across restarts."""
    import asyncio

    from rondevu_server.server import RondevuServer

    path = str(tmp_path / "rondevu.db")
    peer = Peer("f")
    now = 1_765_700_000_000

    async def claim_then_reopen() -> bytes:
        first = await RondevuServer.open(ServerConfig(db=f"sqlite://{path}"), clock=lambda: now)
        body = json.dumps(peer.call("poll", {}, now=now)).encode()
        assert (await first.handle_rpc_body(body))[0] == 200
        await first.aclose()
        second = await RondevuServer.open(ServerConfig(db=path), clock=lambda: now)
        probe: dict[str, Any] = {"method": "getUser", "message": "m", "signature": "s"}
        probe["params"] = {"username": peer.username}
        _, reply = await second.handle_rpc_body(json.dumps(probe).encode())
        await second.aclose()
        return reply

    assert json.loads(asyncio.run(claim_then_reopen()))["result"]["available"] is False


def test_sqlite_v1_database_migrates_to_the_latest(tmp_path: Any) -> None:
    """A database made by schema version 1 gets the later versions' indexes (and the wake
    table of long polling), data kept."""
    import asyncio
    import sqlite3

    from rondevu_server import sql
    from rondevu_server.sqlite_storage import SqliteStorage

    path = str(tmp_path / "v1.db")
    old = sqlite3.connect(path, isolation_level=None)
    for statement in sql.SCHEMA_V1.format(int="INTEGER", serial="INTEGER PRIMARY KEY").split(";"):
        if statement.strip():
            old.execute(statement)
    old.execute("INSERT INTO usernames VALUES ('kept', 'k', 1, 9999999999999, 1)")
    old.execute("PRAGMA user_version = 1")
    old.close()

    async def reopen() -> Any:
        storage = await SqliteStorage.open(path)
        try:
            return await storage.get_user("kept", 2)
        finally:
            await storage.close()

    assert asyncio.run(reopen()).public_key == "k"
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA user_version").fetchone() == (4,)
        names = {row[0] for row in check.execute("SELECT name FROM sqlite_master")}
    finally:
        check.close()
    assert {"idx_offers_owner", "idx_offers_service_order", "idx_offers_free"} <= names
    assert "rondevu_wakes" in names
    assert not {"idx_offers_username", "idx_offers_service"} & names


@pytest.mark.postgres
def test_postgres_v1_schema_migrates_to_the_latest() -> None:
    import asyncio
    import uuid

    import asyncpg  # type: ignore[import-untyped]

    from rondevu_server import sql
    from rondevu_server.postgres_storage import PostgresStorage
    from tests.rondevu_server_testing import postgres_dsn

    dsn = postgres_dsn()
    schema = f"rdv_test_{uuid.uuid4().hex[:12]}"

    async def run() -> set[str]:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
            await conn.execute(f"SET search_path TO {schema}")
            await conn.execute(sql.SCHEMA_V1.format(int="BIGINT", serial="BIGSERIAL PRIMARY KEY"))
            await conn.execute("CREATE TABLE rondevu_schema (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO rondevu_schema VALUES (1)")
        finally:
            await conn.close()
        storage = await PostgresStorage.open(dsn, schema=schema, pool_size=1)
        await storage.close()
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1", schema
            )
            return {row[0] for row in rows}
        finally:
            await conn.close()

    try:
        names = asyncio.run(run())
    finally:
        drop_schema(schema)
    assert {"idx_offers_owner", "idx_offers_service_order", "idx_offers_free"} <= names
    assert not {"idx_offers_username", "idx_offers_service"} & names
