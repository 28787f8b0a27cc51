"""The floor for connection set-up: two aiortc peers, SDP exchanged in memory.

What is timed, per run: from constructing both peers to a data channel open on *both*
sides (offerer: ``ChannelOpen``; answerer: announced and open), with the offer and
answer handed over in memory, no signaling server and no ICE servers, all candidates on
127.0.0.1.  That is the cost of aiortc itself (gathering, ICE checks, DTLS, SCTP, DCEP);
anything the Rondevu client adds on top (RPCs, polling) is measured against it by the
client benchmark.  The peers are `rondevu_aiortc.AiortcPeer`s with
``host_addresses=["127.0.0.1"]``, because bare aiortc cannot be confined to loopback;
the driver's own work is a few Python calls per event (not timed separately).  Runs
are sequential, after one untimed warm-up run; the median and the spread are printed.

    .venv/bin/python bench/bench_aiortc_floor.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from rondevu_aiortc import AiortcPeer
from rondevu_core.inputs import ChannelOpen, PeerInput
from rondevu_core.rules.ice import NO_ICE_SERVERS


async def driver_run() -> float:
    """One set-up through the driver; seconds until both sides' channels are open."""
    done = asyncio.Event()
    pending = [2]

    def on_input(event: PeerInput) -> None:
        if isinstance(event, ChannelOpen):
            pending[0] -= 1
            if pending[0] == 0:
                done.set()

    start = time.perf_counter()
    a = AiortcPeer(ice=NO_ICE_SERVERS, on_input=on_input, host_addresses=["127.0.0.1"])
    b = AiortcPeer(ice=NO_ICE_SERVERS, on_input=on_input, host_addresses=["127.0.0.1"])
    try:
        a.create_data_channel("default")
        answer = await b.accept_offer(await a.create_offer())
        assert answer is not None
        await a.set_remote_answer(answer)
        await asyncio.wait_for(done.wait(), 10)
        return time.perf_counter() - start
    finally:
        await a.close()
        await b.close()


def report(name: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    q = statistics.quantiles(ms, n=10) if len(ms) >= 2 else [ms[0]] * 9
    print(
        f"{name}: median {statistics.median(ms):.1f} ms over {len(ms)} runs "
        f"(min {ms[0]:.1f}, p10 {q[0]:.1f}, p90 {q[-1]:.1f}, max {ms[-1]:.1f})"
    )


async def main(runs: int) -> None:
    await driver_run()  # warm-up: lazy imports and first-use costs stay out of the figure
    report("aiortc floor (AiortcPeer, 127.0.0.1)", [await driver_run() for _ in range(runs)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs (default 30)")
    args = parser.parse_args()
    print(
        "two peers in one process, SDP exchanged in memory, no ICE servers; timed from "
        "constructing both peers to the data channel open on both sides"
    )
    asyncio.run(main(args.runs))
