"""The session layer between a real Chromium and real Python peers (docs/session-layer.md).

The page's client (``/web/session.js`` under ``/web/rondevu.js``) and the Python core
speak the same frames, so: messages cross both ways exactly once and in order while the
link is cut twice (the Python side's UDP sockets silenced, nothing closed, as in
tests/test_session_e2e.py: only a heartbeat can tell), whichever side publishes; the
Python side notices a tab that stopped (its renderer crashed, no ``pagehide``) within
the heartbeat bound (so does it of a frozen page); a page whose publisher started
again ends its session and resends what was not acknowledged, and a publishing page
whose peer never comes back reports what it held; and with the layer off
on either side both talk plain messages, nothing else.  Browser set-up and skipping:
tests/test_browser.py.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from rondevu import ConnectionConfig, DurableConnection, Rondevu
from rondevu_core import events as ev
from rondevu_core.rules.signing import KeyPair
from tests.rondevu_server_testing import RunningServer, unique
from tests.session_testing import blackhole
from tests.test_browser import (
    TIMEOUT,
    Tab,
    first_incoming,
    left,
    live_tab,
    published,
)
from tests.test_browser import _needs_chromium as _needs_chromium  # autouse: skip or fail
from tests.test_browser import srv as srv  # the module's server

FAST = ConnectionConfig(reconnect_backoff_base_ms=50, reconnect_backoff_max_ms=200)
PLAIN = ConnectionConfig(session=None)
BATCH = 50
CUTS = 2


@contextlib.asynccontextmanager
async def python_peer(
    srv: RunningServer,
    name: str,
    config: ConnectionConfig = FAST,
    keypair: KeyPair | None = None,
) -> AsyncIterator[Rondevu]:
    """A Python client; with ``keypair``, ``name`` is used as it is (a process that
    starts again as the same user)."""
    peer = Rondevu.connect(
        srv.url,
        username=unique(name) if keypair is None else name,
        keypair=keypair,
        ice_servers=[],
        host_addresses=["127.0.0.1"],
        connection_config=config,
    )
    async with peer as client:
        yield client


def session_of(conn: DurableConnection) -> str | None:
    return conn.session_id


async def page_sends(tab: Tab, conn: int, items: list[str]) -> None:
    await tab.js(
        "([c, items]) => { for (const t of items) rondevuLive.send(c, t); }", [conn, items]
    )


async def page_received(tab: Tab) -> list[Any]:
    got: list[Any] = await tab.js(
        "rondevuLive.messages.filter(m => m.direction === 'in').map(m => m.data)"
    )
    return got


async def session_events(tab: Tab) -> list[str]:
    """What the page's connections reported of their sessions, by kind."""
    kinds: list[str] = await tab.js("rondevuLive.sessionEvents.map(e => e.kind)")
    return kinds


class Lost:
    """When ``conn`` first reported ``disconnected`` (monotonic s), and why."""

    def __init__(self, conn: DurableConnection) -> None:
        self.reason = ""
        self.at = 0.0
        self._event = anyio.Event()
        conn.on("disconnected", self._on)

    def _on(self, event: ev.Event) -> None:
        if not self._event.is_set():
            assert isinstance(event, ev.Disconnected)
            self.reason, self.at = event.reason, time.monotonic()
            self._event.set()

    async def wait(self) -> float:
        await self._event.wait()
        return self.at


async def crash(cdp: Any) -> None:
    with contextlib.suppress(Exception):
        await cdp.send("Page.crash")


async def cut(tab: Tab, page_conn: int, conn: DurableConnection, n: int) -> None:
    """Cut the link: the first time by silencing the Python side's UDP sockets (nothing
    closed: only the page's heartbeat can tell), then by closing the page's peer
    connection without ending its session (the Python side sees the channel close)."""
    if n == 0:
        assert blackhole(conn.peer_connection) > 0
    else:
        await tab.js("c => rondevuLive.cut(c)", page_conn)


async def stream_across_cuts(tab: Tab, page_conn: int, conn: DurableConnection) -> None:
    """Batches both ways; after the first half of each of the first batches the link is
    cut and the second half is sent while it is down; then an end marker each way: what
    arrives before it is exactly what was sent."""
    sent = [f"py {n}" for n in range(BATCH * (CUTS + 1))]
    from_page = [f"page {n}" for n in range(BATCH * (CUTS + 1))]

    async def both(part: slice) -> None:
        for message in sent[part]:
            conn.send(message)
        await page_sends(tab, page_conn, from_page[part])

    half = BATCH // 2
    for batch in range(CUTS + 1):
        start = batch * BATCH
        await both(slice(start, start + half))
        if batch < CUTS:
            await cut(tab, page_conn, conn, batch)
            await left(conn)
            await both(slice(start + half, start + BATCH))  # into the dead link
            await conn.wait_connected()
        else:
            await both(slice(start + half, start + BATCH))
    conn.send("py end")
    await page_sends(tab, page_conn, ["page end"])
    got = [await conn.receive() for _ in range(len(from_page) + 1)]
    assert got == [*from_page, "page end"]
    await tab.until("() => rondevuLive.messages.some(m => m.data === 'py end')")
    assert await page_received(tab) == [*sent, "py end"]


@pytest.mark.anyio
async def test_the_browser_publishes_and_a_session_survives_two_cuts(srv: RunningServer) -> None:
    with anyio.fail_after(TIMEOUT * 2):
        async with live_tab(srv) as tab, python_peer(srv, "bob") as bob:
            fqn = await tab.js("rondevuLive.publish('durable:1.0.0', 2)")
            conn = await bob.connect_to_service(fqn)
            await conn.wait_connected()
            page_conn = await tab.connection()
            assert page_conn["session"] == session_of(conn) is not None
            await stream_across_cuts(tab, page_conn["id"], conn)
            # One page connection carried the whole session, through resumed links.
            [only] = await tab.js("rondevuLive.connections()")
            assert (only["state"], only["reconnects"]) == ("connected", CUTS)
            kinds = await session_events(tab)
            assert kinds.count("resumed") == CUTS
            assert "heartbeat" in kinds
            assert "rejected" not in kinds  # every Python frame made sense to the page
            assert "session resumed: " in await tab.page.inner_text("#log")
            await tab.screenshot("session-browser-publishes")


@pytest.mark.anyio
async def test_the_browser_connects_and_a_session_survives_two_cuts(srv: RunningServer) -> None:
    with anyio.fail_after(TIMEOUT * 2):
        async with python_peer(srv, "alice") as alice, live_tab(srv) as tab:
            fqn = await published(alice)
            page_id = await tab.js("f => rondevuLive.connect(f)", fqn)
            conn = await first_incoming(alice)
            await conn.wait_connected()
            page_conn = await tab.connection()
            assert page_conn["session"] == session_of(conn) is not None
            resets: list[ev.Event] = []
            conn.on("session:reset", resets.append)
            await stream_across_cuts(tab, page_id, conn)
            # The publisher's pool handed every new link to the same connection.
            assert conn.is_connected
            assert resets == []
            kinds = await session_events(tab)
            assert kinds.count("resumed") == CUTS
            assert "heartbeat" in kinds
            assert "rejected" not in kinds  # every Python frame made sense to the page
            await tab.screenshot("session-browser-connects")
            # Larger than a frame both ways (browsers and aiortc take 256 KiB): chunked
            # by one side, reassembled by the other.
            big = bytes(range(256)) * 2400
            conn.send(big)
            whole = await tab.until(
                """n => {
                    const m = rondevuLive.messages.at(-1);
                    return m.direction === 'in' && typeof m.data !== 'string'
                        && m.data.length === n && m.data.every((b, i) => b === i % 256);
                }""",
                len(big),
            )
            assert whole is True
            await tab.js(
                "([c, n]) => rondevuLive.send(c, Uint8Array.from({length: n}, (_, i) => i % 256))",
                [page_id, len(big)],
            )
            assert await conn.receive() == big


@pytest.mark.anyio
async def test_the_python_side_notices_a_crashed_tab_by_its_heartbeat(srv: RunningServer) -> None:
    with anyio.fail_after(TIMEOUT):
        async with python_peer(srv, "alice") as alice, live_tab(srv) as tab:
            await tab.js("f => rondevuLive.connect(f)", await published(alice))
            conn = await first_incoming(alice)
            await conn.wait_connected()
            down = Lost(conn)
            cdp = await tab.page.context.new_cdp_session(tab.page)
            started = time.monotonic()
            # The renderer dies at once: no pagehide, no close of any channel.  The
            # call itself gets no reply (its page is gone): it is not waited for.
            async with anyio.create_task_group() as group:
                group.start_soon(crash, cdp)
                noticed = await down.wait() - started
                group.cancel_scope.cancel()
            assert "Heartbeat timeout" in down.reason
            # Within the heartbeat timeout (2.5 s) of the last frame heard, plus slack.
            assert noticed < 3.5


@pytest.mark.anyio
async def test_a_frozen_browser_publisher_is_noticed_by_its_heartbeat(srv: RunningServer) -> None:
    """The page's test hook: its connection stops sending and reading, the peer
    connection stays up (only the heartbeat can tell)."""
    with anyio.fail_after(TIMEOUT):
        async with live_tab(srv) as tab, python_peer(srv, "bob") as bob:
            fqn = await tab.js("rondevuLive.publish('frozen:1.0.0', 1)")
            conn = await bob.connect_to_service(fqn)
            await conn.wait_connected()
            page_conn = await tab.connection()
            down = Lost(conn)
            started = time.monotonic()
            await tab.js("c => rondevuLive.freeze(c)", page_conn["id"])
            assert await down.wait() - started < 3.5
            assert "Heartbeat timeout" in down.reason


async def plain_exchange(tab: Tab, page_id: int, conn: DurableConnection) -> None:
    """Strings and bytes both ways; what crossed the Python side's channel is exactly
    what the page sent (no frame, no heartbeat), and the page got exactly Python's."""
    raw: list[object] = []
    conn.data_channel.on("message", raw.append)
    conn.send("plain text")
    conn.send(b"\x01plain bytes")
    await tab.js("c => rondevuLive.send(c, 'from the page')", page_id)
    await tab.js("c => rondevuLive.send(c, new Uint8Array([2, 3]))", page_id)
    assert [await conn.receive(), await conn.receive()] == ["from the page", b"\x02\x03"]
    assert await tab.received(2) == ["plain text", b"\x01plain bytes"]
    assert raw == ["from the page", b"\x02\x03"]
    assert await tab.js("rondevuLive.messages.filter(m => m.direction === 'in').length") == 2
    [shown] = [c for c in await tab.js("rondevuLive.connections()") if c["id"] == page_id]
    assert (shown["layered"], shown["session"]) == (False, None)
    assert session_of(conn) is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    "plain_side",
    ["browser", "python"],
    ids=["layer-off-in-the-browser", "layer-off-in-python"],
)
async def test_when_one_side_does_not_speak_the_layer_both_talk_plain(
    srv: RunningServer, plain_side: str
) -> None:
    """Whichever side leaves the layer out, in either role, the other sees only plain
    messages: a page offer (publish) and a Python offer (the page answers)."""
    python_config = PLAIN if plain_side == "python" else FAST
    with anyio.fail_after(TIMEOUT * 2):
        async with live_tab(srv) as tab, python_peer(srv, "alice", python_config) as alice:
            if plain_side == "browser":
                await tab.js("rondevuLive.session = null")
            async with python_peer(srv, "bob", python_config) as bob:
                conn = await bob.connect_to_service(
                    await tab.js(f"rondevuLive.publish('{plain_side}:1.0.0', 1)")
                )
                await conn.wait_connected()
                page_conn = await tab.connection()
                await plain_exchange(tab, page_conn["id"], conn)
                await conn.close()
            await tab.js("rondevuLive.messages.length = 0")
            page_id = await tab.js("f => rondevuLive.connect(f)", await published(alice))
            conn = await first_incoming(alice)
            await conn.wait_connected()
            await plain_exchange(tab, page_id, conn)


@pytest.mark.anyio
async def test_the_browser_resends_to_a_publisher_that_started_again(srv: RunningServer) -> None:
    """The publishing process dies with messages it received but never acknowledged;
    the page's next offer comes from a new process (another epoch): its session ends
    with a reset that lists them, and they go to the new process (at-least-once)."""
    name, key = unique("alice"), KeyPair.from_seed(os.urandom(32))
    with anyio.fail_after(TIMEOUT * 2):
        async with live_tab(srv) as tab:
            async with python_peer(srv, name, keypair=key) as alice:
                page_id = await tab.js("f => rondevuLive.connect(f)", await published(alice))
                first = await first_incoming(alice)
                await first.wait_connected()
                await tab.send(page_id, "acknowledged")
                assert await first.receive() == "acknowledged"
                idle = "id => rondevuLive._byId(id).delivery.unackedMessages === 0"
                await tab.until(idle, page_id)
                assert blackhole(first.peer_connection) > 0  # its acks never leave
                await page_sends(tab, page_id, ["lost 1", "lost 2"])
                assert [await first.receive(), await first.receive()] == ["lost 1", "lost 2"]
            # alice's process is gone; a new one publishes the same service.
            async with python_peer(srv, name, keypair=key) as again:
                await published(again)
                second = await first_incoming(again)
                assert [await second.receive(), await second.receive()] == ["lost 1", "lost 2"]
                await tab.until("() => rondevuLive.sessionEvents.some(e => e.kind === 'reset')")
                [reset] = await tab.js(
                    "rondevuLive.sessionEvents.filter(e => e.kind === 'reset')"
                    ".map(e => [e.unacked, e.resent, e.reason])"
                )
                assert reset == [["lost 1", "lost 2"], True, "the peer is a new process"]
                second.send("hello again")
                assert await tab.received(1) == ["hello again"]


@pytest.mark.anyio
async def test_a_browser_publisher_whose_peer_does_not_come_back_reports_what_it_held(
    srv: RunningServer,
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with live_tab(srv) as tab:
            await tab.js("rondevuLive.session = { resumeTimeoutMs: 1500 }")
            fqn = await tab.js("rondevuLive.publish('gone:1.0.0', 1)")
            async with python_peer(srv, "bob") as bob:
                conn = await bob.connect_to_service(fqn)
                await conn.wait_connected()
                page_conn = await tab.connection()
                assert blackhole(conn.peer_connection) > 0  # its acks never leave
                await page_sends(tab, page_conn["id"], ["a", "b"])
                assert [await conn.receive(), await conn.receive()] == ["a", "b"]
            # bob is gone for good: the page's session waits 1.5 s, then gives up.
            closed = await tab.connection("closed")
            assert closed["id"] == page_conn["id"]
            [report] = await tab.js("rondevuLive.undelivered")
            assert (report["messages"], report["reason"], report["maybeDelivered"]) == (
                ["a", "b"],
                "the peer did not come back",
                True,
            )
