"""Wake-ups of held calls across processes: PostgreSQL NOTIFY, and a SQLite file's table.

Two levels, both on real databases:
- two storages on one database (as two processes would have), each listening with a
  recording sink: each hears the other's writes, never its own; PostgreSQL's listener
  comes back after its connection is killed, and then wakes everything once;
- two real ``rondevu serve`` processes on one database: a poll held by one is answered
  promptly when the answer is written through the other.

A held call is known to be held without timing: the batch that holds it also claims a
fresh username in a call after it, and that claim becomes visible (through the other
process) only once the waiting call has registered and read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from rondevu_core.rules.fqn import parse_service_fqn
from rondevu_server import sql
from rondevu_server.longpoll import end_key, ice_key, poll_key
from rondevu_server.postgres_storage import PostgresStorage
from rondevu_server.sqlite_storage import SqliteStorage
from rondevu_server.storage import Storage
from tests.cli_testing import Processes, start_serve
from tests.rondevu_server_testing import Peer, call, drop_schema, now_ms, postgres_dsn, sdp, unique

LONG = 20_000
BACK = 10.0
NOW = 1_765_700_000_000
STORAGES = ["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)]


class RecordingSink:
    """A `WakeSink` that remembers what it was told and lets a test wait for it."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.all = 0
        self.changed = asyncio.Event()

    def wake(self, keys: Iterable[str]) -> None:
        self.keys.extend(keys)
        self.changed.set()

    def wake_all(self) -> None:
        self.all += 1
        self.changed.set()

    @property
    def waiting(self) -> int:
        return 1  # always someone to wake: the SQLite listener looks every interval

    async def until(self, *, keys: int = 0, all: int = 0) -> None:
        with anyio.fail_after(BACK):
            while len(self.keys) < keys or self.all < all:
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def two_storages(kind: str, tmp_path: Path) -> AsyncIterator[list[Storage]]:
    """Two storages on one database, as two server processes would open it."""
    if kind == "postgres":
        schema = f"rdv_test_{uuid.uuid4().hex[:12]}"
        opened: list[Storage] = []
        try:
            for _ in range(2):
                opened.append(await PostgresStorage.open(postgres_dsn(), schema=schema))
            yield opened
        finally:
            for storage in opened:
                await storage.close()
            await asyncio.to_thread(drop_schema, schema)
    else:
        path = str(tmp_path / "shared.db")
        first = await SqliteStorage.open(path)
        second = await SqliteStorage.open(path)
        try:
            yield [first, second]
        finally:
            await first.close()
            await second.close()


async def published_offer(storage: Storage, owner: str) -> str:
    await storage.claim_username(owner, f"key-{owner}", NOW)
    fqn = parse_service_fqn(f"{unique('svc')}:1.0.0@{owner}")
    assert fqn is not None
    offer_id = uuid.uuid4().hex * 2
    await storage.publish_service(
        fqn=fqn,
        service_id=str(uuid.uuid4()),
        offers=[(offer_id, sdp())],
        now=NOW,
        expires_at=NOW + 300_000,
        max_offers_per_user=10,
    )
    return offer_id


@pytest.mark.anyio
@pytest.mark.parametrize("kind", STORAGES)
async def test_storages_hear_each_others_writes_not_their_own(kind: str, tmp_path: Path) -> None:
    async with two_storages(kind, tmp_path) as (one, two):
        heard_by_one, heard_by_two = RecordingSink(), RecordingSink()
        await one.listen(heard_by_one)
        await two.listen(heard_by_two)
        alice, bob = unique("a"), unique("b")
        offer = await published_offer(one, alice)
        answered = await one.answer_offer(offer, bob, sdp(), NOW + 1)
        assert list(answered) == [poll_key(alice), ice_key(offer, alice), ice_key(offer, bob)]
        await heard_by_two.until(keys=4)
        # The publish ended alice's held polls (her offers changed), then the answer.
        assert heard_by_two.keys == [end_key(poll_key(alice)), *answered]
        sent = await two.add_ice_candidates(offer, bob, ["{}"], NOW + 2, 10)
        assert list(sent) == [ice_key(offer, alice), poll_key(alice)]
        await heard_by_one.until(keys=2)
        # one's own answer came first on the database: had it been heard, it would show
        assert heard_by_one.keys == list(sent)
        replied = await one.add_ice_candidates(offer, alice, ["{}"], NOW + 3, 10)
        assert list(replied) == [ice_key(offer, bob)]
        await heard_by_two.until(keys=5)
        assert heard_by_two.keys[4:] == [ice_key(offer, bob)]


@pytest.mark.anyio
async def test_candidates_nobody_can_read_yet_wake_nobody(tmp_path: Path) -> None:
    storage = await SqliteStorage.open(str(tmp_path / "one.db"))
    try:
        owner = unique("a")
        offer = await published_offer(storage, owner)
        assert list(await storage.add_ice_candidates(offer, unique("o"), ["{}"], NOW, 10)) == []
        assert list(await storage.add_ice_candidates(offer, owner, ["{}"], NOW, 10)) == []
    finally:
        await storage.close()


@pytest.mark.anyio
@pytest.mark.postgres
async def test_the_postgres_listener_reconnects_and_wakes_everything() -> None:
    schema = f"rdv_test_{uuid.uuid4().hex[:12]}"
    one = await PostgresStorage.open(postgres_dsn(), schema=schema)
    two = await PostgresStorage.open(postgres_dsn(), schema=schema)
    try:
        heard = RecordingSink()
        await two.listen(heard)
        conn = await asyncpg.connect(postgres_dsn(), server_settings={"search_path": schema})
        try:
            channel = await conn.fetchval(f"SELECT {sql.WAKE_CHANNEL}")
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
                f'LISTEN "{channel}"',
            )
        finally:
            await conn.close()
        assert killed == 1
        await heard.until(all=1)  # back, and every held call re-reads once
        offer = await published_offer(one, unique("a"))
        await one.answer_offer(offer, unique("b"), sdp(), NOW + 1)
        await heard.until(keys=3)
    finally:
        await one.close()
        await two.close()
        await asyncio.to_thread(drop_schema, schema)


# -- two real server processes ---------------------------------------------------------


def holding_batch(peer: Peer, method: str, params: dict[str, Any]) -> tuple[Any, str]:
    """A batch: ``method`` with a long wait, then a call claiming a fresh name; with that
    name, which is claimed once the waiting call is held (or answered)."""
    marker = Peer("m")
    batch = [
        peer.call(method, {**params, "waitMs": LONG}, now=now_ms()),
        marker.call("poll", {}, now=now_ms()),
    ]
    return batch, marker.username


def until_claimed(client: httpx.Client, name: str) -> None:
    """Return once ``name`` is claimed, as seen through ``client``."""
    deadline = time.monotonic() + BACK
    while time.monotonic() < deadline:
        if not call(client, Peer("w"), "getUser", {"username": name})["available"]:
            return
    pytest.fail(f"{name} was never claimed")


@pytest.fixture(params=STORAGES)
def two_servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """Two ``rondevu serve`` processes on one database (distinct ports): their URLs."""
    schema = f"rdv_test_{uuid.uuid4().hex[:12]}"
    if request.param == "postgres":
        env = {"RONDEVU_DB": postgres_dsn(), "RONDEVU_DB_SCHEMA": schema}
    else:
        env = {"RONDEVU_DB": str(tmp_path / "shared.db")}
    try:
        with Processes() as started:
            urls = [start_serve(started, env=env)[0] for _ in range(2)]
            yield urls
            for process in started:
                process.terminate()
            assert [process.wait(30) for process in started] == [0, 0]
    finally:
        if request.param == "postgres":
            drop_schema(schema)


def test_a_poll_held_by_one_process_is_woken_through_the_other(two_servers: list[str]) -> None:
    alice, bob = Peer("a"), Peer("b")
    with (
        httpx.Client(base_url=two_servers[0], timeout=60) as one,
        httpx.Client(base_url=two_servers[1], timeout=60) as two,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        fqn = f"{unique('svc')}:1.0.0@{alice.username}"
        offers = [{"sdp": sdp()}]
        published = call(one, alice, "publishService", {"serviceFqn": fqn, "offers": offers})
        offer = published["offers"][0]["offerId"]
        batch, marker = holding_batch(alice, "poll", {"since": 0})
        held = pool.submit(one.post, "/rpc", json=batch)
        until_claimed(two, marker)
        assert not held.done()
        call(two, bob, "answerOffer", {"offerId": offer, "sdp": "answer"})
        polled, _ = held.result(BACK).json()
        assert [a["offerId"] for a in polled["result"]["answers"]] == [offer]

        # and getIceCandidates: bob waits on one process, alice sends through the other
        batch, marker = holding_batch(bob, "getIceCandidates", {"offerId": offer, "since": 0})
        held = pool.submit(one.post, "/rpc", json=batch)
        until_claimed(two, marker)
        assert not held.done()
        call(two, alice, "addIceCandidates", {"offerId": offer, "candidates": [{"c": 1}]})
        got, _ = held.result(BACK).json()
        assert [c["candidate"] for c in got["result"]["candidates"]] == [{"c": 1}]
