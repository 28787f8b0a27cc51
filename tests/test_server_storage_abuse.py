"""Storage abuse: the per-offer candidate cap and the cost of random discovery.

- ``max_candidates_per_offer`` bounds an offer's stored candidates whoever sends them:
  many usernames (one free key each) cannot each store their own quota on one offer, the
  owner keeps at least half of the cap against them, and the actual answerer gets their
  share back once it has answered.
- Random discovery (getService without ``@user``) costs the same however many services
  and offers the table holds: it looks at a bounded window of the newest services, and
  still picks each available service of that window, and only those.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rondevu_core.rules.fqn import ServiceFqn, validate_service_fqn
from rondevu_server import sql
from rondevu_server.postgres_storage import PostgresStorage
from rondevu_server.server import open_storage
from rondevu_server.sqlite_storage import SqliteStorage
from rondevu_server.storage import Rejected, Storage
from tests.rondevu_server_testing import (
    BACKENDS,
    Peer,
    RunningServer,
    drop_schema,
    make_config,
    postgres_dsn,
    running_server,
    sdp,
    unique,
)

NOW = 1_765_700_000_000
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 10.0.0.2 6000 typ host", "sdpMid": "0"}
T = TypeVar("T")


# -- helpers -----------------------------------------------------------------------------


async def _query(storage: Storage, text: str, *args: Any) -> Any:
    """The first column of the first row of ``text`` (``$n`` parameters) on ``storage``."""
    if isinstance(storage, SqliteStorage):
        row = storage._conn.execute(re.sub(r"\$(\d+)", r"?\1", text), args).fetchone()
        return row[0]
    assert isinstance(storage, PostgresStorage)
    return await storage._pool.fetchval(text, *args)


async def _execute(storage: Storage, text: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Run ``text`` once per row on ``storage``, outside the plans (test set-up only)."""
    if isinstance(storage, SqliteStorage):
        storage._conn.executemany(re.sub(r"\$(\d+)", r"?\1", text), rows)
        return
    assert isinstance(storage, PostgresStorage)
    async with storage._pool.acquire() as conn:
        await conn.executemany(text, rows)


def _with_storage(backend: str, body: Callable[[Storage], Awaitable[T]], **settings: Any) -> T:
    """Run ``body`` on a fresh storage of ``backend``; a PostgreSQL schema is dropped after."""
    config, schema = make_config(backend, **settings)

    async def run() -> T:
        storage = await open_storage(config)
        try:
            return await body(storage)
        finally:
            await storage.close()

    try:
        return asyncio.run(run())
    finally:
        if schema is not None:
            drop_schema(schema)


async def _publish(storage: Storage, owner: str, offers: int, *, ttl: int = 600_000) -> list[str]:
    """Claim ``owner`` and publish ``svc:1.0.0@owner`` with ``offers`` offers; their ids."""
    await storage.claim_username(owner, f"key-{owner}", NOW)
    ids = [uuid.uuid4().hex for _ in range(offers)]
    await storage.publish_service(
        fqn=ServiceFqn(service="svc", version="1.0.0", username=owner),
        service_id=str(uuid.uuid4()),
        offers=[(oid, sdp(oid)) for oid in ids],
        now=NOW,
        expires_at=NOW + ttl,
        max_offers_per_user=1000,
    )
    return ids


def _stored(srv: RunningServer, offer_id: str, role: str | None = None) -> int:
    """Candidates stored for ``offer_id`` (of ``role`` if given), read from the database."""
    text = "SELECT COUNT(*) FROM ice_candidates WHERE offer_id = $1"
    if role is None:
        return int(srv.run(_query(srv.server.storage, text, offer_id)))
    text += " AND role = $2"
    return int(srv.run(_query(srv.server.storage, text, offer_id, role)))


def _add(srv: RunningServer, peer: Peer, offer_id: str, count: int) -> dict[str, Any]:
    params = {"offerId": offer_id, "candidates": [CANDIDATE] * count}
    return srv.rpc(peer, "addIceCandidates", params)


# -- the per-offer candidate cap -----------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_senders_cannot_pass_the_offer_cap(backend: str) -> None:
    with running_server(backend, max_candidates_per_offer=10) as srv:
        alice = Peer("a")
        offer = srv.publish(alice, unique("svc"))["offers"][0]["offerId"]
        # Twelve would-be answerers (auto-claimed names) share half of the cap...
        outcomes = [_add(srv, Peer("m"), offer, 1) for _ in range(12)]
        assert [o["success"] for o in outcomes] == [True] * 5 + [False] * 7
        assert {o.get("error") for o in outcomes[5:]} == {
            "Too many ICE candidates for this offer (max 5)"
        }
        # ...the owner still has the rest, and the offer as a whole holds no more.
        assert _add(srv, alice, offer, 5)["success"] is True
        assert _add(srv, alice, offer, 1)["error"] == (
            "Too many ICE candidates for this offer (max 10)"
        )
        assert _add(srv, Peer("m"), offer, 1)["error"] == (
            "Too many ICE candidates for this offer (max 10)"
        )
        assert _stored(srv, offer) == 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_senders_cannot_pass_the_offer_cap(backend: str) -> None:
    """Writers racing on one offer are counted one after the other (PostgreSQL: 4
    pooled connections at once)."""

    async def body(storage: Storage) -> tuple[list[str], list[str], int, int]:
        owner = unique("o")
        (offer,) = await _publish(storage, owner, 1)

        async def add(sender: str, count: int) -> str:
            try:
                await storage.add_ice_candidates(offer, sender, ["{}"] * count, NOW, 40)
            except Rejected as error:
                return str(error)
            return "stored"

        outsiders = await asyncio.gather(*(add(unique("m"), 2) for _ in range(30)))
        mine = await asyncio.gather(*(add(owner, 5) for _ in range(8)))
        count = "SELECT COUNT(*) FROM ice_candidates WHERE offer_id = $1"
        total = await _query(storage, count, offer)
        others = await _query(storage, count + " AND role = 'answerer'", offer)
        return outsiders, mine, int(total), int(others)

    outsiders, mine, total, others = _with_storage(backend, body)
    assert (total, others) == (40, 20)
    others_full = "Too many ICE candidates for this offer (max 20)"
    assert Counter(outsiders) == {"stored": 10, others_full: 20}  # 2 each
    offer_full = "Too many ICE candidates for this offer (max 40)"
    assert Counter(mine) == {"stored": 4, offer_full: 4}  # 5 each, after the others' 20


@pytest.mark.parametrize("backend", BACKENDS)
def test_answerer_sends_after_outsiders_filled_their_share(backend: str) -> None:
    with running_server(backend, max_candidates_per_offer=10) as srv:
        alice, bob = Peer("a"), Peer("b")
        offer = srv.publish(alice, unique("svc"))["offers"][0]["offerId"]
        assert _add(srv, alice, offer, 4)["success"] is True
        for _ in range(5):
            assert _add(srv, Peer("m"), offer, 1)["success"] is True
        assert _add(srv, bob, offer, 1)["error"] == (
            "Too many ICE candidates for this offer (max 5)"
        )
        srv.ok(bob, "answerOffer", {"offerId": offer, "sdp": sdp()})
        # The answer dropped the outsiders' candidates: bob has the others' share.
        assert _stored(srv, offer, "answerer") == 0
        assert _add(srv, bob, offer, 5)["success"] is True
        assert _add(srv, Peer("m"), offer, 1)["error"] == "Not authorized to access this offer"
        got = srv.ok(alice, "getIceCandidates", {"offerId": offer, "since": 0})
        assert [c["candidate"] for c in got["candidates"]] == [CANDIDATE] * 5
        assert _add(srv, alice, offer, 1)["success"] is True
        assert _add(srv, alice, offer, 1)["error"] == (
            "Too many ICE candidates for this offer (max 10)"
        )
        assert _stored(srv, offer) == 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_answerer_gets_its_share_when_the_answer_clean_up_missed_outsiders(
    backend: str,
) -> None:
    """Outsiders' candidates left after an answer (as if its clean-up never ran) are
    dropped when they would refuse the answerer."""

    async def body(storage: Storage) -> tuple[int, int]:
        owner, answerer = unique("o"), unique("b")
        (offer,) = await _publish(storage, owner, 1)
        await storage.answer_offer(offer, answerer, sdp(), NOW)
        await _execute(
            storage,
            "INSERT INTO ice_candidates (offer_id, username, role, candidate, created_at)"
            " VALUES ($1, $2, 'answerer', '{}', $3)",
            [(offer, unique("m"), NOW + i) for i in range(5)],
        )
        await storage.add_ice_candidates(offer, answerer, ["{}"] * 5, NOW + 10, 10)
        count = "SELECT COUNT(*) FROM ice_candidates WHERE offer_id = $1 AND username = $2"
        return int(await _query(storage, count, offer, answerer)), int(
            await _query(storage, "SELECT COUNT(*) FROM ice_candidates WHERE offer_id = $1", offer)
        )

    assert _with_storage(backend, body) == (5, 5)


# -- random discovery ------------------------------------------------------------------


async def _discover(storage: Storage, calls: int) -> Counter[str]:
    """How often random discovery of ``svc:1.0.0`` picked each service, checking each
    pick is handed out with its service's first free offer."""
    picked: Counter[str] = Counter()
    for _ in range(calls):
        found = await storage.find_random_service("svc", "1.0.0", NOW)
        direct = await storage.find_service(validate_service_fqn(found.service_fqn), NOW)
        assert found == direct
        picked[found.username] += 1
    return picked


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_discovery_returns_each_available_service(backend: str) -> None:
    async def body(storage: Storage) -> tuple[set[str], Counter[str]]:
        available = set()
        for offers in (1, 5, 20):  # uniform among services, whatever their offer count
            owner = unique("u")
            await _publish(storage, owner, offers)
            available.add(owner)
        for _ in range(2):  # every offer answered
            for oid in await _publish(storage, unique("x"), 2):
                await storage.answer_offer(oid, unique("b"), sdp(), NOW)
        await _publish(storage, unique("x"), 3, ttl=0)  # expired
        return available, await _discover(storage, 200)

    available, picked = _with_storage(backend, body)
    # Each of 3 services is missed by 200 uniform picks with odds (2/3)**200 < 1e-35.
    assert set(picked) == available
    assert min(picked.values()) > 20  # a share of 200/3 each, far from weighted by offers


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_discovery_finds_the_few_available_services(backend: str) -> None:
    """When most services of the window have no free offer the random sample often
    misses, and the pick falls back to looking at every service of the window."""

    async def body(storage: Storage) -> tuple[set[str], Counter[str], str]:
        for _ in range(60):
            (oid,) = await _publish(storage, unique("x"), 1)
            await storage.answer_offer(oid, unique("b"), sdp(), NOW)
        with pytest.raises(Rejected) as none:
            await storage.find_random_service("svc", "1.0.0", NOW)
        available = {unique("u"), unique("u")}
        for owner in available:
            await _publish(storage, owner, 1)
        return available, await _discover(storage, 200), str(none.value)

    available, picked, refusal = _with_storage(backend, body)
    assert refusal == "No services found"
    assert set(picked) == available  # missing one of 2 in 200: odds 2**-199


def _seed(services: int, offers_each: int, *, answered: bool) -> list[tuple[str, list[Any]]]:
    """``services`` services of ``svc:1.0.0`` (one user each) with ``offers_each`` offers,
    all answered or none, plus as many offers of another service."""
    users = [(f"user-{i}", f"key-{i}", NOW, NOW + 10**9, NOW) for i in range(services + 1)]
    rows = [
        (f"s{i}", f"svc:1.0.0@user-{i}", "svc", "1.0.0", f"user-{i}", NOW + i, NOW + 10**9)
        for i in range(services)
    ]
    rows.append(("other", "other:1.0.0@user-0", "other", "1.0.0", "user-0", NOW, NOW + 10**9))
    answerer = "b" if answered else None
    offers = [
        (f"o{i}-{k}", f"user-{i}", f"s{i}", "v=0", NOW + k, NOW + 10**9, answerer)
        for i in range(services)
        for k in range(offers_each)
    ]
    offers += [
        (f"x{k}", "user-0", "other", "v=0", NOW + k, NOW + 10**9, None)
        for k in range(services * offers_each)
    ]
    return [
        ("INSERT INTO usernames VALUES ($1, $2, $3, $4, $5)", users),
        (
            "INSERT INTO services (id, service_fqn, service_name, version, username,"
            " created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            rows,
        ),
        (
            "INSERT INTO offers (id, username, service_id, sdp, created_at, expires_at,"
            " answerer_username) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            offers,
        ),
    ]


SMALL = sql.DISCOVERY_WINDOW + 100
LARGE = 4 * SMALL


@pytest.mark.parametrize("answered", [False, True], ids=["available", "all-answered"])
def test_sqlite_random_discovery_work_does_not_grow_with_the_table(answered: bool) -> None:
    """SQLite's virtual-machine steps per pick: the same for 4 times the services and
    offers (the unbounded pick's grew with them: it shuffled every free offer)."""

    def steps(services: int) -> int:
        async def run() -> int:
            storage = await SqliteStorage.open(":memory:")
            conn: sqlite3.Connection = storage._conn
            try:
                for text, rows in _seed(services, 3, answered=answered):
                    conn.executemany(re.sub(r"\$(\d+)", r"?\1", text), rows)
                counted = [0]

                def tick() -> int:
                    counted[0] += 1
                    return 0  # go on

                conn.set_progress_handler(tick, 10)
                for _ in range(20):
                    try:
                        await storage.find_random_service("svc", "1.0.0", NOW)
                    except Rejected:
                        assert answered
                conn.set_progress_handler(None, 0)
                return counted[0]
            finally:
                await storage.close()

        return asyncio.run(run())

    small, large = steps(SMALL), steps(LARGE)
    assert large <= small * 1.1, (small, large)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a PostgreSQL JSON plan."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows (and index entries) every scan of a PostgreSQL ``EXPLAIN ANALYZE`` plan read,
    kept or filtered out, over all its loops."""
    read = 0
    for node in _nodes(plan):
        if "Scan" in node["Node Type"] and "Subquery" not in node["Node Type"]:
            per_loop = (
                node["Actual Rows"]
                + node.get("Rows Removed by Filter", 0)
                + node.get("Rows Removed by Index Recheck", 0)
            )
            read += per_loop * node["Actual Loops"]
    return read


@pytest.mark.postgres
@pytest.mark.parametrize("answered", [False, True], ids=["available", "all-answered"])
def test_postgres_random_discovery_reads_a_bounded_window(answered: bool) -> None:
    """Rows PostgreSQL reads per pick, from ``EXPLAIN ANALYZE``: the same for 4 times the
    services and offers, and about one service-index pass over the window."""
    dsn = postgres_dsn()

    def rows_read(services: int) -> list[int]:
        schema = f"rdv_test_{uuid.uuid4().hex[:12]}"

        async def run() -> list[int]:
            storage = await PostgresStorage.open(dsn, schema=schema, pool_size=1)
            await storage.close()
            conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
            try:
                for text, rows in _seed(services, 3, answered=answered):
                    await conn.executemany(text, rows)
                explain = "EXPLAIN (ANALYZE, FORMAT JSON) " + str(sql._FIND_RANDOM.postgres)
                reads = []
                for _ in range(5):
                    plan = await conn.fetchval(explain, "svc", "1.0.0", NOW)
                    reads.append(_rows_read(json.loads(plan)[0]["Plan"]))
                return reads
            finally:
                await conn.close()

        try:
            return asyncio.run(run())
        finally:
            drop_schema(schema)

    small, large = rows_read(SMALL), rows_read(LARGE)
    assert max(large) <= max(small) * 1.1, (small, large)
    # A sampled pick reads the window once; a pick that must look at every service of the
    # window reads it twice (sample, then all) with a probe and a row per service.
    assert max(large) <= 5 * sql.DISCOVERY_WINDOW, large


@given(
    role=st.sampled_from(["offerer", "answerer"]),
    cap=st.integers(min_value=1, max_value=2_000),
    total=st.integers(min_value=0, max_value=2_000),
    share=st.floats(min_value=0, max_value=1),
    adding=st.integers(min_value=1, max_value=300),
)
def test_the_ice_cap_rule(role: str, cap: int, total: int, share: float, adding: int) -> None:
    """Storing is allowed exactly when the offer stays within the cap and non-owners
    within their half; a refusal names the bound that was hit."""
    total = min(total, cap)  # the count stops at the cap
    others = int(total * share)
    exceeded = sql._ice_limit_exceeded(role, (total, others), adding, cap)
    fits_offer = total + adding <= cap
    fits_share = role == "offerer" or others + adding <= cap // 2
    assert (exceeded is None) == (fits_offer and fits_share)
    if not fits_offer:
        assert exceeded == cap
    elif not fits_share:
        assert exceeded == cap // 2
