"""Connection set-up with a real browser, against two Python peers, in the same run.

Three series through our server (a child process, SQLite file, 127.0.0.1), ``--runs``
set-ups each, after one untimed warm-up:

- **browser → Python**: the live page's client connects to a Python publisher; timed in
  the page, from ``connect()`` to the connection's ``connected`` (channel open);
- **Python → Python** (the baseline): a fresh Python client connects to the same
  publisher; from ``connect_to_service`` to ``connected``;
- **Python → browser**: a fresh Python client connects to a service the page publishes;
  from ``connect_to_service`` to ``connected``.

Every publisher long-polls for answers (the server's default extension), so no series
waits for a polling interval.  Chromium is Debian's (``/usr/bin/chromium``), started as
the tests start it.

    .venv/bin/python bench/bench_browser_connect.py [--runs N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from playwright.async_api import async_playwright

from rondevu import Rondevu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from bench.bench_client_connect import start_server

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
]
TIMEOUT = 30.0
# In the page: connect, wait for "connected", close; the milliseconds it took.
PAGE_CONNECT = """async (fqn) => {
    const started = performance.now();
    const conn = rondevuLive.client.connect(fqn);
    await new Promise((done) => {
        const check = () => { if (conn.state === 'connected') done(); };
        conn.addEventListener('state', check);
        check();
    });
    const ms = performance.now() - started;
    conn.close();
    return ms;
}"""


def peer(url: str, name: str) -> Rondevu:
    unique = f"{name}-{time.monotonic_ns() % 10**9}"
    return Rondevu.connect(url, username=unique, ice_servers=[], host_addresses=["127.0.0.1"])


async def python_connect(url: str, fqn: str) -> float:
    async with peer(url, "bob") as bob:
        started = time.perf_counter()
        conn = await bob.connect_to_service(fqn)
        await conn.wait_connected(timeout=TIMEOUT)
        ms = (time.perf_counter() - started) * 1000
        await conn.close()
    return ms


def summary(ms: list[float]) -> str:
    return f"median {statistics.median(ms):7.0f} ms  (min {min(ms):.0f}, max {max(ms):.0f})"


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        server, url = await start_server(Path(folder) / "bench.db", long_poll=True)
        try:
            async with async_playwright() as playwright, peer(url, "alice") as alice:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                page = await browser.new_page()
                await page.goto(f"{url}/web/")
                await page.wait_for_selector("body[data-ready='1']")
                alice.publish_service("bench:1.0.0", max_offers=2)
                await alice.start_filling()
                python_fqn = f"bench:1.0.0@{alice.username}"
                page_fqn = await page.evaluate("rondevuLive.publish('bench:1.0.0', 2)")
                series: dict[str, list[float]] = {"browser": [], "python": [], "to-page": []}
                for run in range(runs + 1):  # run 0 is the warm-up
                    with anyio.fail_after(TIMEOUT):
                        # Arrive at a random phase of alice's one-second poll, as a peer does.
                        await anyio.sleep(random.uniform(0, 1))
                        browser_ms = await page.evaluate(PAGE_CONNECT, python_fqn)
                        await anyio.sleep(random.uniform(0, 1))
                        python_ms = await python_connect(url, python_fqn)
                        to_page_ms = await python_connect(url, page_fqn)
                    if run > 0:
                        series["browser"].append(browser_ms)
                        series["python"].append(python_ms)
                        series["to-page"].append(to_page_ms)
                await browser.close()
        finally:
            server.terminate()
            await server.wait()
    browser_median = statistics.median(series["browser"])
    python_median = statistics.median(series["python"])
    print(f"{runs} set-ups each, Chromium {CHROMIUM}, server on 127.0.0.1 (SQLite)")
    print(f"  browser -> Python publisher:  {summary(series['browser'])}")
    print(f"  baseline, Python -> Python:   {summary(series['python'])}")
    print(f"  ratio browser / baseline: {browser_median / python_median:.2f}")
    print(f"  Python -> browser publisher:  {summary(series['to-page'])}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    anyio.run(main, parser.parse_args().runs)
