"""Idle signaling load of the client: an idle published service, and a connected answerer.

What is measured, in each series: Alice publishes a service (one offer) and Bob connects
to it; once Bob is connected and Alice's pool is full again, nothing happens for a
window of ``--window-s`` seconds (default 25, the longest hold of our server), and the
HTTP requests each side sends in that window are counted at the transport.  Alice's
are what an idle published service costs (her open connection needs no signaling);
Bob's are what a connected answerer costs.

Two series run, each on its own fresh server (``rondevu_server.cli.serve``, SQLite file,
child process on 127.0.0.1): **long polling on** (our server's default, 25 s holds) and
the baseline, **long polling off** (``long_poll_max_wait_ms=0``: no extension, the
client polls as 0.18.9 does, every ``--poll-interval-ms``, default 1000).  Goals: with
long polling at most 1 request per 25 s for the idle service, 0 for the answerer.

    .venv/bin/python bench/bench_idle_load.py [--window-s 25] [--poll-interval-ms 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from bench.bench_client_connect import SERVICE, TIMEOUT, Publisher, client, start_server


async def series(window_s: float, poll_ms: int, *, long_poll: bool) -> tuple[int, int, int]:
    """Requests in the window: the idle publisher's, the connected answerer's, and the
    hold the client used (0: plain polling)."""
    with tempfile.TemporaryDirectory() as tmp:
        process, url = await start_server(Path(tmp) / "idle.sqlite", long_poll=long_poll)
        try:
            suffix = time.monotonic_ns() % 1_000_000
            alice_client, alice_wire = client(url, f"alice-{suffix}")
            bob_client, bob_wire = client(url, f"bob-{suffix}")
            async with alice_client as alice, bob_client as bob:
                alice.publish_service(SERVICE, max_offers=1, poll_interval_ms=poll_ms)
                publisher = Publisher(alice, alice_wire)
                await alice.start_filling()
                published = publisher.published
                conn = await bob.connect_to_service(f"{SERVICE}@{alice.username}")
                await conn.wait_connected(TIMEOUT)
                with anyio.fail_after(TIMEOUT):
                    await publisher.published_more_than(published)  # refilled
                alice_before, bob_before = alice_wire.requests, bob_wire.requests
                await anyio.sleep(window_s)  # the window itself: nothing is awaited
                assert conn.is_connected
                return (
                    alice_wire.requests - alice_before,
                    bob_wire.requests - bob_before,
                    alice.long_poll_wait_ms or 0,
                )
        finally:
            process.terminate()
            with anyio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()


async def main(window_s: float, poll_ms: int) -> None:
    on = await series(window_s, poll_ms, long_poll=True)
    off = await series(window_s, poll_ms, long_poll=False)
    scale = 25 / window_s
    print(f"window: {window_s:g} s of idleness per series; figures per 25 s")
    print(
        f"long polling on (holds of {on[2]} ms): idle published service "
        f"{on[0] * scale:.1f} requests, connected answerer {on[1] * scale:.1f}"
    )
    print(
        f"baseline, long polling off (plain polls every {poll_ms} ms): idle published "
        f"service {off[0] * scale:.1f} requests, connected answerer {off[1] * scale:.1f}"
    )
    if on[0]:
        print(f"ratio (idle service, off / on): {off[0] / on[0]:.1f}x fewer requests")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window-s", type=float, default=25.0, help="idle window (s)")
    parser.add_argument(
        "--poll-interval-ms", type=int, default=1000, help="plain poll interval (ms)"
    )
    args = parser.parse_args()
    anyio.run(main, args.window_s, args.poll_interval_ms)
