"""What one reading of ``GET /state`` costs the database, against a discovery page.

The live page reads the overview twice a second, and the server reads the database for
it at most every 250 ms per page, however many pages are open.  This times
`Storage.overview` (the default page: 50 services and 50 answered offers, and the two
totals) on a SQLite file holding ``--users`` services of ``--offers`` offers each, a
third of them answered, and, as the baseline in the same run on the same data, a page
of paginated discovery (`Storage.list_services`, 50 entries), which every client may
ask at will.  Medians of ``--runs`` readings, after one untimed warm-up each.

    .venv/bin/python bench/bench_state.py [--users N] [--offers N] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rondevu_core.rules.fqn import parse_service_fqn
from rondevu_server.sqlite_storage import SqliteStorage

NOW = 1_765_700_000_000


async def seed(storage: SqliteStorage, users: int, offers: int) -> None:
    """``users`` services of ``offers`` offers; every third offer answered."""
    for u in range(users):
        name = f"user-{u}"
        await storage.claim_username(name, f"key-{u}", NOW)
        pairs = []
        for o in range(offers):
            sdp = f"v=0\r\no=- {u}-{o} 2 IN IP4 127.0.0.1\r\n"
            pairs.append((hashlib.sha256(sdp.encode()).hexdigest(), sdp))
        fqn = parse_service_fqn(f"svc:1.0.0@{name}")
        assert fqn is not None
        await storage.publish_service(
            fqn=fqn,
            service_id=f"s{u}",
            offers=pairs,
            now=NOW + u,
            expires_at=NOW + 10**9,
            max_offers_per_user=10_000,
        )
        for offer_id, _ in pairs[::3]:
            await storage.answer_offer(offer_id, "answerer", "v=0 answer", NOW + u)


async def median_ms(runs: int, read: Callable[[], Awaitable[object]]) -> float:
    await read()  # warm-up: statement cache, pages in memory
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await read()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--offers", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        storage = await SqliteStorage.open(str(Path(folder) / "bench.db"))
        try:
            await seed(storage, args.users, args.offers)
            now = NOW + 10**6
            state = await median_ms(args.runs, lambda: storage.overview(50, 0, now))
            page = await median_ms(
                args.runs, lambda: storage.list_services("svc", "1.0.0", 50, 0, now)
            )
        finally:
            await storage.close()
    live = args.users * args.offers
    print(f"SQLite, {args.users} services, {live} live offers ({live // 3 + 1} answered or so)")
    print(f"  GET /state reading (overview, 50 + 50 rows): {state:8.2f} ms")
    print(f"  baseline, getService page (50 entries):      {page:8.2f} ms")
    print(f"  ratio: {state / page:.1f}x")
    print(f"  at most 4 readings/s per page shown: {state * 4:.0f} ms of database per second")


if __name__ == "__main__":
    asyncio.run(main())
