"""Storage abuse: the per-offer candidate cap.

- ``max_candidates_per_offer`` bounds an offer's stored candidates whoever sends them:
  many usernames (one free key each) cannot each store their own quota on one offer, the
  owner keeps at least half of the cap against them, and the actual answerer gets their
  share back once it has answered.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest

from rondevu_core.fqn import ServiceFqn
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
