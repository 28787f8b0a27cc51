"""A real Chromium and real Python peers, through a real server on 127.0.0.1.

The browser runs the live page (``/web/``) of the server under test and its client
(``rondevu.js``); the Python peers are `rondevu.Rondevu` clients over HTTP with aiortc.
Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright, which never
downloads a browser here.  It is started with mDNS host names off (aioice cannot resolve
them) and loopback candidates allowed, and the page uses no ICE server, so every packet
stays on 127.0.0.1, as the Python peers' ``host_addresses`` keep theirs.

Where Chromium or Playwright is missing the tests skip with the reason, except where
``RONDEVU_TEST_REQUIRE_CHROMIUM`` is set (CI installs both): there they fail.
Screenshots of the page go to ``test-artifacts/browser/`` (or
``$RONDEVU_TEST_ARTIFACTS``), never into the repository.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from rondevu import DurableConnection, Rondevu
from tests import cli_testing
from tests.cli_testing import Lines, Processes, start_cli
from tests.rondevu_server_testing import FakeClock, Peer, RunningServer, running_server, unique

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("RONDEVU_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
TIMEOUT = 30.0


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (Debian: apt-get install chromium; CI does)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    reason = _missing()
    if reason is not None:
        if os.environ.get("RONDEVU_TEST_REQUIRE_CHROMIUM"):  # CI installed it: never skip there
            pytest.fail(reason)
        pytest.skip(reason)


class WallClock(FakeClock):
    """The server reads real time: the browser signs with ``Date.now()``."""

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with running_server("sqlite", clock=WallClock()) as server:
        yield server


class Tab:
    """The live page in one Chromium tab, and what its ``window.rondevuLive`` can do."""

    def __init__(self, page: Page) -> None:
        self.page = page

    async def js(self, expression: str, arg: Any = None) -> Any:
        return await self.page.evaluate(expression, arg)

    async def until(self, predicate: str, arg: Any = None) -> Any:
        """Wait (up to `TIMEOUT`) until the JavaScript ``predicate``, a function of
        ``arg``, is truthy, and return its value."""
        handle = await self.page.wait_for_function(
            predicate, arg=arg, polling=50, timeout=TIMEOUT * 1000
        )
        return await handle.json_value()

    async def username(self) -> str:
        name: str = await self.js("rondevuLive.client.username")
        return name

    async def connection(self, state: str = "connected") -> dict[str, Any]:
        """The first of the page's connections in ``state``, once there is one."""
        found: dict[str, Any] = await self.until(
            "s => rondevuLive.connections().find(c => c.state === s)", state
        )
        return found

    async def send(self, conn: int, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.js("([c, b]) => rondevuLive.send(c, new Uint8Array(b))", [conn, list(data)])
        else:
            await self.js("([c, t]) => rondevuLive.send(c, t)", [conn, data])

    async def received(self, count: int) -> list[str | bytes]:
        """The first ``count`` messages the page received, once it has them."""
        items = await self.until(
            """n => {
                const got = rondevuLive.messages.filter(m => m.direction === 'in');
                return got.length >= n && got.slice(0, n).map(m =>
                    typeof m.data === 'string' ? {text: m.data} : {bytes: Array.from(m.data)});
            }""",
            count,
        )
        return [item["text"] if "text" in item else bytes(item["bytes"]) for item in items]

    async def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@contextlib.asynccontextmanager
async def live_tab(srv: RunningServer) -> AsyncIterator[Tab]:
    """Chromium on the live page of ``srv``, ready (identity made, name claimed)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"{srv.url}/web/")
            await page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT * 1000)
            try:
                yield Tab(page)
            except BaseException:  # say what the page saw: its log is the story
                with contextlib.suppress(Exception), anyio.fail_after(5, shield=True):
                    print("page log:\n" + await page.inner_text("#log"))
                raise
            assert errors == []
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def python_peer(srv: RunningServer, name: str) -> AsyncIterator[Rondevu]:
    peer = Rondevu.connect(
        srv.url, username=unique(name), ice_servers=[], host_addresses=["127.0.0.1"]
    )
    async with peer as client:
        yield client


def signed(srv: RunningServer, peer: Peer, method: str, params: dict[str, Any]) -> Any:
    """One call by ``peer``, signed now."""
    reply = srv.post(peer.call(method, params, now=time.time_ns() // 1_000_000)).json()
    assert reply["success"], reply
    return reply["result"]


def offerers_candidates(srv: RunningServer, fqn: str) -> tuple[str, list[Any]]:
    """Answer the service's oldest free offer as a stranger (with an SDP that will never
    connect) and read what its answerer may: the SDP and the owner's candidates."""
    peer = Peer("x")
    offer = signed(srv, peer, "getService", {"serviceFqn": fqn})
    answer = {"serviceFqn": fqn, "offerId": offer["offerId"], "sdp": "v=0\r\n"}
    signed(srv, peer, "answerOffer", answer)
    read = signed(srv, peer, "getIceCandidates", {"offerId": offer["offerId"], "since": 0})
    return offer["sdp"], read["candidates"]


async def published(client: Rondevu, service: str = "chat:1.0.0") -> str:
    client.publish_service(service, max_offers=2)
    await client.start_filling()
    return f"{service}@{client.username}"


async def first_incoming(client: Rondevu) -> DurableConnection:
    async for conn in client.incoming():
        return conn
    raise AssertionError("the client closed before anyone connected")


async def left(conn: DurableConnection) -> None:
    """Return once ``conn`` is no longer connected (it may have left already: with the
    session layer a publishing side then waits for its peer, with no further event)."""
    if not conn.is_connected:
        return
    async for _event in conn.events():
        if not conn.is_connected:
            return


@pytest.mark.anyio
async def test_the_browser_signs_as_the_protocol_page_says(srv: RunningServer) -> None:
    """docs/protocol.md §4's worked example, signed by WebCrypto in the page."""
    with anyio.fail_after(TIMEOUT):
        async with live_tab(srv) as tab:
            made = await tab.js(
                """async () => {
                    const { Identity } = await import('/web/wire.js');
                    const seed = Uint8Array.from({length: 32}, (_, i) => i + 1);
                    const me = await Identity.fromSeed('alice', seed);
                    return [me.publicKey, await me.sign('poll:alice:1765700000000')];
                }"""
            )
    assert made == [
        "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=",
        "SWBs8U662WBdjo0yeGw7AaRGBCmSvRnKNWBGs1bb3h1qc91xSArJ5xoksNz/k29q/+r5+ug2nf6TwctpCRxLBg==",
    ]


processes = cli_testing.processes


async def line(lines: Lines, pattern: str) -> str:
    """The next line of a ``rondevu`` subprocess matching ``pattern`` (read off the loop)."""
    return await anyio.to_thread.run_sync(lines.wait_for, pattern, TIMEOUT)


@pytest.mark.anyio
async def test_a_person_chats_with_the_command_line_peers(
    srv: RunningServer, processes: Processes
) -> None:
    """README's way: the page's buttons and forms, `rondevu publish` and `rondevu
    connect` as processes."""
    env = {"RONDEVU_API_URL": srv.url}
    alice = unique("alice")
    with anyio.fail_after(TIMEOUT * 2):
        publisher = start_cli(
            "publish", "chat:1.0.0", "--username", alice, "--host-address", "127.0.0.1", env=env
        )
        processes.append(publisher)
        published = Lines(publisher.stderr)
        await line(published, rf"published chat:1\.0\.0@{alice}")
        async with live_tab(srv) as tab:
            page = tab.page
            # Connect with the button in alice's row, type, send: alice's echo comes back.
            await page.click(f"#services tr[data-key='s:chat:1.0.0@{alice}'] button")
            await page.wait_for_selector("#connections .state-connected", timeout=TIMEOUT * 1000)
            await line(published, r" connected \(offer ")
            await page.fill("#chat-text", "hello from the page")
            await page.click("#chat-form button")
            await page.wait_for_selector(
                f"#log li.in:has-text('from {alice}: hello from the page')", timeout=TIMEOUT * 1000
            )
            # Publish from the form; `rondevu connect` sends a line and prints the reply.
            await page.fill("#publish-service", "talk:1.0.0")
            await page.click("#publish-form button")
            me = await tab.username()
            await page.wait_for_selector(f"#services tr[data-key='s:talk:1.0.0@{me}']")
            connector = start_cli(
                "connect",
                f"talk:1.0.0@{me}",
                "--host-address",
                "127.0.0.1",
                stdin=subprocess.PIPE,
                env=env,
            )
            processes.append(connector)
            assert connector.stdin is not None
            await line(Lines(connector.stderr), rf"connected to talk:1\.0\.0@{me}")
            connector.stdin.write(b"hello from the terminal\n")
            connector.stdin.flush()
            await page.wait_for_selector(
                "#log li.in:has-text('hello from the terminal')", timeout=TIMEOUT * 1000
            )
            options = await page.eval_on_selector_all(
                "#chat-to option", "os => os.map(o => [o.value, o.textContent])"
            )
            [to_connector] = [value for value, text in options if "anon-" in text]
            await page.select_option("#chat-to", to_connector)
            await page.fill("#chat-text", "hello back")
            await page.click("#chat-form button")
            printed = Lines(connector.stdout)
            assert await line(printed, r"hello back") == "hello back"  # raw in a pipe
            await tab.screenshot("chat-with-the-command-line")
            await page.close(run_before_unload=True)
        # The page closed its links on the way out: `rondevu publish` sees it at once
        # (with the session layer, as a lost link whose peer may still resume).
        await line(published, r" (left|link lost)")


MESSAGES: list[str | bytes] = ["hello from one side", "ünïcødé ✓", b"\x00\x01\xfe\xff", b""]


@pytest.mark.anyio
async def test_the_browser_publishes_and_a_python_peer_connects(srv: RunningServer) -> None:
    with anyio.fail_after(TIMEOUT):
        async with live_tab(srv) as tab, python_peer(srv, "bob") as bob:
            fqn = await tab.js("rondevuLive.publish('chat:1.0.0', 2)")
            assert fqn == f"chat:1.0.0@{await tab.username()}"
            conn = await bob.connect_to_service(fqn)
            for message in MESSAGES:
                conn.send(message)
            await conn.wait_connected()
            assert await tab.received(len(MESSAGES)) == MESSAGES
            page_conn = await tab.connection()
            assert (page_conn["role"], page_conn["peer"]) == ("offerer", bob.username)
            for message in reversed(MESSAGES):
                await tab.send(page_conn["id"], message)
            assert [await conn.receive() for _ in MESSAGES] == list(reversed(MESSAGES))
            # The pool refilled (a republish, which replaces the unanswered offers and
            # their candidates): the next peers still connect, to offers old and new...
            for name in ("carol", "dave"):
                async with python_peer(srv, name) as other:
                    later = await other.connect_to_service(fqn)
                    later.send(f"{name} here")
                    await later.wait_connected()
            assert (await tab.received(len(MESSAGES) + 2))[-2:] == ["carol here", "dave here"]
            # ...and a free offer carries the page's candidates, in its SDP and sent
            # again with addIceCandidates after every republish (for trickled ones).
            sdp, candidates = offerers_candidates(srv, fqn)
            assert "a=candidate:" in sdp
            assert candidates
            await tab.screenshot("browser-publishes")


@pytest.mark.anyio
async def test_a_python_peer_publishes_and_the_browser_connects(srv: RunningServer) -> None:
    with anyio.fail_after(TIMEOUT):
        async with python_peer(srv, "alice") as alice, live_tab(srv) as tab:
            fqn = await published(alice)
            conn_id = await tab.js("f => rondevuLive.connect(f)", fqn)
            for message in MESSAGES:
                await tab.send(conn_id, message)  # kept until the channel opens
            conn = await first_incoming(alice)
            assert [await conn.receive() for _ in MESSAGES] == MESSAGES
            for message in MESSAGES:
                conn.send(message)
            assert await tab.received(len(MESSAGES)) == MESSAGES
            page_conn = await tab.connection()
            assert (page_conn["role"], page_conn["peer"]) == ("answerer", alice.username)
            await tab.screenshot("browser-connects")


@pytest.mark.anyio
async def test_without_long_polling_the_browser_polls() -> None:
    """A server that holds no call and keeps its state to itself (GET / as the
    original's): both directions still connect, and the page says what it lacks."""
    plain_server = running_server(
        "sqlite", clock=WallClock(), long_poll_max_wait_ms=0, public_state=False
    )
    with plain_server as plain:
        with anyio.fail_after(TIMEOUT):
            async with live_tab(plain) as tab, python_peer(plain, "alice") as alice:
                assert await tab.js("rondevuLive.client.api.longPollMs()") == 0
                assert "does not publish its state" in await tab.page.inner_text("#totals")
                fqn = await tab.js("rondevuLive.publish('plain:1.0.0', 1)")
                async with python_peer(plain, "bob") as bob:
                    conn = await bob.connect_to_service(fqn)
                    conn.send("to the page")
                    assert await tab.received(1) == ["to the page"]
                conn_id = await tab.js("f => rondevuLive.connect(f)", await published(alice))
                await tab.send(conn_id, b"\x01to alice")
                assert await (await first_incoming(alice)).receive() == b"\x01to alice"


@pytest.mark.anyio
async def test_closing_the_tab_is_noticed_by_the_python_side(srv: RunningServer) -> None:
    with anyio.fail_after(TIMEOUT):
        async with python_peer(srv, "alice") as alice, live_tab(srv) as tab:
            fqn = await published(alice)
            await tab.js("f => rondevuLive.connect(f)", fqn)
            conn = await first_incoming(alice)
            await conn.wait_connected()
            started = time.monotonic()
            # pagehide closes every link: the channel's close reaches aiortc at once,
            # long before ICE would give up on a silent peer (about 30 s).
            await tab.page.close(run_before_unload=True)
            await left(conn)
            assert time.monotonic() - started < 10


@pytest.mark.anyio
async def test_pagehide_closes_the_links_and_withdraws_the_service(srv: RunningServer) -> None:
    """The page's own pagehide handler, run with the tab still open: every link closes
    (the Python side notices) and the page's published service leaves the server."""
    with anyio.fail_after(TIMEOUT):
        async with python_peer(srv, "alice") as alice, live_tab(srv) as tab:
            await tab.js("f => rondevuLive.connect(f)", await published(alice))
            conn = await first_incoming(alice)
            await conn.wait_connected()
            fqn = await tab.js("rondevuLive.publish('leaving:1.0.0', 1)")
            row = f"#services tr[data-key='s:{fqn}']"
            await tab.page.wait_for_selector(row, timeout=TIMEOUT * 1000)
            await tab.js("dispatchEvent(new PageTransitionEvent('pagehide'))")
            await left(conn)
            await tab.page.wait_for_selector(row, state="detached", timeout=TIMEOUT * 1000)
            assert (await tab.connection("closed"))["peer"] == alice.username


@pytest.mark.anyio
async def test_the_browser_reconnects_when_the_python_side_drops_it(srv: RunningServer) -> None:
    with anyio.fail_after(TIMEOUT):
        async with python_peer(srv, "alice") as alice, live_tab(srv) as tab:
            fqn = await published(alice)
            await tab.js("f => rondevuLive.connect(f)", fqn)
            first = await first_incoming(alice)
            await first.wait_connected()
            await first.close()
            # The page sees the drop and answers a fresh offer of the same service.
            await tab.until("() => rondevuLive.connections()[0].state === 'reconnecting'")
            second = await first_incoming(alice)
            page_conn = await tab.until(
                "() => { const c = rondevuLive.connections()[0];"
                " return c.state === 'connected' && c.reconnects === 1 && c; }"
            )
            await tab.send(page_conn["id"], "after the drop")
            assert await second.receive() == "after the drop"
            log = await tab.js("document.getElementById('log').innerText")
            assert "connected → reconnecting" in log
            assert "reconnecting → connected" in log
            await tab.screenshot("browser-reconnected")


@pytest.mark.anyio
async def test_the_live_page_shows_a_connection_appear_and_disappear(srv: RunningServer) -> None:
    with anyio.fail_after(TIMEOUT):
        async with live_tab(srv) as tab:
            async with python_peer(srv, "alice") as alice, python_peer(srv, "bob") as bob:
                fqn = await published(alice, "shown:1.0.0")
                row = f"#services tr[data-key='s:{fqn}']"
                await tab.page.wait_for_selector(row, timeout=TIMEOUT * 1000)
                conn = await bob.connect_to_service(fqn)
                await conn.wait_connected()
                answered = f"#handshakes tr:has(td:text-is('{bob.username}'))"
                shown = await tab.page.wait_for_selector(answered, timeout=TIMEOUT * 1000)
                assert shown is not None
                assert alice.username in await shown.inner_text()
                await tab.screenshot("live-page-connection")
                await alice.delete_service()  # alice stops: her offers, answered or not, go
            await tab.page.wait_for_selector(answered, state="detached", timeout=TIMEOUT * 1000)
            await tab.page.wait_for_selector(row, state="detached", timeout=TIMEOUT * 1000)
            await tab.screenshot("live-page-after")
