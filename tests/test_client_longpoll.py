"""End to end: long polling between real aiortc peers and our real server on 127.0.0.1.

Each flow runs twice: against a server that holds calls (``long_poll_max_wait_ms`` set,
advertised in ``GET /``) and against the same server with the extension switched off,
which must see exactly the original client's calls (no ``waitMs``, plain polling).
Requests are counted at the transport (one HTTP request per `send`); windows are
bounded by events - replies seen - never by sleeps, and no test asserts a duration.

The server's holds are short here (1.5 s, above the client's minimum hold) so a window
of a few holds stays quick; the rules are the same at 25 s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from aiortc import RTCPeerConnection

from rondevu import DurableConnection, HttpTransport, Rondevu
from rondevu.api import RondevuAPI
from rondevu.rpc_client import wall_clock_ms
from rondevu_core.config import ConnectionConfig
from rondevu_core.rpc import Method, RpcOk, RpcRequest, Urgency
from rondevu_core.rules.sdp import strip_candidates
from tests.rondevu_server_testing import FakeClock, Peer, RunningServer, running_server, unique

pytestmark = pytest.mark.anyio

TIMEOUT = 20.0
HOLD_MS = 1500
POLL_MS = 100
ORIGINAL_PARAMS = {"serviceFqn", "offers", "ttl", "offerId", "sdp", "since", "candidates"}
"""Every param the 0.18.9 client sends with the calls a connection makes."""


class WallClock(FakeClock):
    """A server clock that follows real time (clients sign with the wall clock)."""

    def __call__(self) -> int:
        return wall_clock_ms()


class Recorder(HttpTransport):
    """An `HttpTransport` that records every request it sent and wakes waiters on each
    reply (the real transport underneath: same GET /, same timeouts)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.sent: list[list[dict[str, Any]]] = []
        self.replied: list[list[dict[str, Any]]] = []
        self.bodies: list[tuple[list[dict[str, Any]], Any]] = []  # requests and replies
        self._changed = anyio.Event()

    async def send(self, body: Any) -> Any:
        calls = body if isinstance(body, list) else [body]
        self.sent.append(calls)
        try:
            reply = await super().send(body)
            self.bodies.append((calls, reply))
            return reply
        finally:
            self.replied.append(calls)
            self._changed.set()
            self._changed = anyio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (bounded by the caller) until ``condition`` holds after some reply."""
        while not condition():
            await self._changed.wait()

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [c for request in self.sent for c in request if c["method"] == method]

    def replied_polls(self) -> int:
        return sum(1 for request in self.replied for c in request if c["method"] == "poll")


@pytest.fixture(scope="module", params=["on", "off"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, RunningServer]]:
    hold = HOLD_MS if request.param == "on" else 0
    with running_server("sqlite", clock=WallClock(), long_poll_max_wait_ms=hold) as running:
        yield request.param, running


def client(url: str, prefix: str) -> tuple[Rondevu, Recorder]:
    transport = Recorder(url)
    rondevu = Rondevu.connect(
        transport=transport,
        username=unique(prefix),
        ice_servers=[],
        host_addresses=["127.0.0.1"],
        connection_config=ConnectionConfig(ice_polling_interval_ms=POLL_MS),
    )
    return rondevu, transport


async def connected_pair(
    url: str, alice: Rondevu
) -> tuple[Rondevu, Recorder, DurableConnection, DurableConnection]:
    bob, bob_wire = client(url, "bob")
    await bob.__aenter__()
    conn = await bob.connect_to_service(f"lp:1.0.0@{alice.username}")
    incoming = alice.incoming()
    await conn.wait_connected(TIMEOUT)
    theirs = await anext(incoming)
    await incoming.aclose()  # type: ignore[attr-defined]
    return bob, bob_wire, conn, theirs


async def test_connect_and_exchange_with_and_without_the_extension(
    server: tuple[str, RunningServer],
) -> None:
    mode, running = server
    alice, alice_wire = client(running.url, "alice")
    with anyio.fail_after(TIMEOUT):
        async with alice:
            alice.publish_service("lp:1.0.0", poll_interval_ms=POLL_MS)
            await alice.start_filling()
            bob, bob_wire, conn, theirs = await connected_pair(running.url, alice)
            try:
                conn.send("hello")
                assert await theirs.receive() == "hello"
                theirs.send("hi")
                assert await conn.receive() == "hi"
            finally:
                await bob.__aexit__(None, None, None)
            assert alice.long_poll_wait_ms == (HOLD_MS if mode == "on" else 0)
    polls = alice_wire.calls("poll")
    assert polls, "the publisher collected the answer by polling"
    if mode == "on":
        assert all(p["params"]["waitMs"] == HOLD_MS for p in polls)
        # aiortc's descriptions carry every candidate: nobody waits for one.
        assert bob_wire.calls("getIceCandidates") == []
        # A held call always travels alone.
        for request in alice_wire.sent + bob_wire.sent:
            if any("waitMs" in c["params"] for c in request):
                assert len(request) == 1
    else:
        # Exactly the original's calls: no param it does not send, polling as before.
        for request in alice_wire.sent + bob_wire.sent:
            for call in request:
                assert set(call["params"]) <= ORIGINAL_PARAMS, call
        assert bob_wire.calls("getIceCandidates"), "the answerer polls candidates, as 0.18.9"


async def test_a_connected_answerer_makes_no_more_requests(
    server: tuple[str, RunningServer],
) -> None:
    _, running = server
    alice, alice_wire = client(running.url, "alice")
    with anyio.fail_after(TIMEOUT):
        async with alice:
            alice.publish_service("lp:1.0.0", poll_interval_ms=POLL_MS)
            await alice.start_filling()
            bob, bob_wire, conn, _ = await connected_pair(running.url, alice)
            try:
                # Let bob's last replies land (a reply in flight is not a new request).
                await bob_wire.until(lambda: len(bob_wire.replied) == len(bob_wire.sent))
                before = len(bob_wire.sent)
                # A window of three publisher polls answered after that point: three
                # holds with the extension, three intervals without.
                polls = alice_wire.replied_polls()
                await alice_wire.until(lambda: alice_wire.replied_polls() >= polls + 3)
                assert conn.is_connected
                assert len(bob_wire.sent) == before
            finally:
                await bob.__aexit__(None, None, None)


@pytest.mark.parametrize("server", ["on"], indirect=True)  # off: it polls as 0.18.9 does
async def test_an_idle_publisher_makes_one_request_per_hold(
    server: tuple[str, RunningServer],
) -> None:
    _, running = server
    alice, wire = client(running.url, "alice")
    with anyio.fail_after(TIMEOUT):
        async with alice:
            alice.publish_service("lp:1.0.0", poll_interval_ms=POLL_MS)
            await alice.start_filling()
            await wire.until(lambda: wire.replied_polls() >= 1)
            start = len(wire.sent)
            await wire.until(lambda: wire.replied_polls() >= 4)
            window = wire.sent[start:]
    # Three holds ran out, and each cost exactly one request: the next poll (plus at
    # most the one now held, sent when the third returned).
    assert len(window) in (3, 4)
    for request in window:
        assert len(request) == 1
        assert request[0]["method"] == "poll"
        assert request[0]["params"]["waitMs"] == HOLD_MS


async def test_a_held_call_leaves_room_for_urgent_ones_and_cancelling_it_frees_the_server() -> None:
    """One client: a held poll in flight does not hold up an urgent call (another HTTP
    connection of the same client), and withdrawing the held call closes its request,
    so the server stops holding it at once."""
    with running_server("sqlite", clock=WallClock(), long_poll_max_wait_ms=25_000) as running:

        def until_held(count: int) -> Any:
            return anyio.to_thread.run_sync(running.run, running.server.waits.until_waiting(count))

        with anyio.fail_after(TIMEOUT):
            async with RondevuAPI(HttpTransport(running.url), username=unique("carol")) as api:
                held = RpcRequest(
                    method=Method.POLL,
                    params={"since": 0, "waitMs": 25_000},
                    urgency=Urgency.HELD,
                )
                returned = anyio.Event()
                scope = anyio.CancelScope()

                async def hold() -> None:
                    with scope:
                        await api.rpc.call(held)
                        returned.set()

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(hold)
                    await until_held(1)
                    urgent = RpcRequest(
                        method=Method.GET_USER, params={"username": "x"}, urgency=Urgency.URGENT
                    )
                    assert isinstance(await api.rpc.call(urgent), RpcOk)
                    assert not returned.is_set()
                    assert api.rpc.in_flight == 1  # the held poll, still held
                    scope.cancel()
                await until_held(0)
                assert not returned.is_set()
                assert api.rpc.in_flight == 0
                assert api.rpc.requests_sent == 2


@pytest.mark.parametrize("server", ["on"], indirect=True)  # off: test_client_cursors.py
async def test_a_held_get_ice_candidates_is_answered_by_a_trickled_candidate(
    server: tuple[str, RunningServer],
) -> None:
    """An offer without its candidates (a trickling offerer): the answerer holds
    getIceCandidates, the offerer's candidate answers it, and the next one holds at
    the exact cursor."""
    _, running = server
    offerer = Peer("raw")
    pc = RTCPeerConnection()
    try:
        pc.createDataChannel("default")
        await pc.setLocalDescription(await pc.createOffer())
        service = f"{unique('trickle')}:1.0.0"

        def ok(method: str, params: dict[str, Any]) -> Any:
            reply = running.post(offerer.call(method, params, now=wall_clock_ms())).json()
            assert reply["success"] is True, reply
            return reply["result"]

        published = ok(
            "publishService",
            {
                "serviceFqn": f"{service}@{offerer.username}",
                "offers": [{"sdp": strip_candidates(pc.localDescription.sdp)}],
                "ttl": 300_000,
            },
        )
        offer_id = published["offers"][0]["offerId"]
        bob, wire = client(running.url, "bob")

        def ice(requests: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
            return [c for r in requests for c in r if c["method"] == "getIceCandidates"]

        with anyio.fail_after(TIMEOUT):
            async with bob:
                await bob.connect_to_service(f"{service}@{offerer.username}")
                await wire.until(lambda: bool(ice(wire.sent)))
                assert ice(wire.sent)[0]["params"]["waitMs"] == HOLD_MS
                assert ice(wire.replied) == []  # held: nothing came back yet
                candidate = {
                    "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host",
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                }
                ok("addIceCandidates", {"offerId": offer_id, "candidates": [candidate]})

                def answered() -> list[dict[str, Any]]:
                    return [
                        item
                        for calls, reply in wire.bodies
                        if calls[0]["method"] == "getIceCandidates" and isinstance(reply, list)
                        for item in reply[0].get("result", {}).get("candidates", [])
                    ]

                await wire.until(lambda: bool(answered()))
                assert [item["candidate"] for item in answered()] == [candidate]
                created = answered()[0]["createdAt"]
                await wire.until(
                    lambda: any(c["params"]["since"] == created for c in ice(wire.sent))
                )
                assert all(c["params"]["waitMs"] == HOLD_MS for c in ice(wire.sent))
    finally:
        await pc.close()
