"""The poll cursors move on a real runtime: real clocks, a real HTTP server on 127.0.0.1.

The machines take two clocks: ``now`` (monotonic, for deadlines) on every input and
``unix_ms`` (wall time) on RPC results.  The offer pool's ``poll`` cursor and the ICE
``getIceCandidates`` cursor may only move past server timestamps that are plausible
against the wall clock.  When the core compared those stamps with the monotonic clock,
the guard was always false on a real runtime: every poll asked ``since=0`` for ever and
de-duplication hid it.  The fakes could not see it (their single clock was a Unix time),
so these tests use the real `MachineRunner` clocks against the real server and look at
the ``since`` each call carried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from aiortc import RTCPeerConnection

from rondevu import HttpTransport, Rondevu
from rondevu.rpc_client import wall_clock_ms
from rondevu_core.config import ConnectionConfig
from rondevu_core.rpc import Method, RpcOk, RpcOutcome, RpcRequest
from tests.rondevu_server_testing import Peer, RunningServer, running_server, unique
from tests.test_client_e2e import WallClock

TIMEOUT = 20.0
LOOPBACK = ["127.0.0.1"]

Seen = list[tuple[RpcRequest, RpcOutcome]]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server("sqlite", clock=WallClock()) as running:
        yield running


def client(
    srv: RunningServer, prefix: str, config: ConnectionConfig, *, long_poll: bool = True
) -> Rondevu:
    return Rondevu.connect(
        transport=HttpTransport(srv.url),
        username=unique(prefix),
        ice_servers=[],
        host_addresses=LOOPBACK,
        connection_config=config,
        long_poll=long_poll,
    )


class Recorder:
    """Every call a client makes, with its outcome, as the runtime sees them.

    It wraps the client's own `RpcClient.call`, so the calls still reach the real server.
    """

    def __init__(self, rondevu: Rondevu) -> None:
        self.seen: Seen = []
        self._changed = anyio.Event()
        rpc = rondevu.api.rpc
        call = rpc.call

        async def recording(request: RpcRequest) -> RpcOutcome:
            outcome = await call(request)
            self.seen.append((request, outcome))
            self._changed.set()
            self._changed = anyio.Event()
            return outcome

        rpc.call = recording  # type: ignore[method-assign]

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait, call by call, until ``condition()`` holds."""
        while not condition():
            await self._changed.wait()

    def first_with(self, method: Method, key: str) -> int | None:
        """The index of the first successful ``method`` call whose result has ``key`` items."""
        for i, (request, outcome) in enumerate(self.seen):
            if request.method is method and isinstance(outcome, RpcOk) and outcome.result.get(key):
                return i
        return None

    def result(self, index: int) -> Any:
        outcome = self.seen[index][1]
        assert isinstance(outcome, RpcOk)
        return outcome.result


def sinces(seen: Seen, method: Method) -> list[int]:
    """The ``since`` of every ``method`` call in ``seen``."""
    return [int(request.params["since"]) for request, _ in seen if request.method is method]


@pytest.mark.anyio
async def test_pool_poll_cursor_moves_past_the_first_answer(server: RunningServer) -> None:
    """After an answer arrives, the publisher's next `poll` asks only for newer ones."""
    fast = ConnectionConfig(reconnect_backoff_base_ms=50, max_reconnect_attempts=0)
    service = f"{unique('cursor')}:1.0.0"
    with anyio.fail_after(TIMEOUT):
        async with client(server, "alice", fast) as alice, client(server, "bob", fast) as bob:
            calls = Recorder(alice)
            alice.publish_service(service, max_offers=1, poll_interval_ms=50)
            await alice.start_filling()
            before = wall_clock_ms()
            conn = await bob.connect_to_service(f"{service}@{alice.username}")
            await conn.wait_connected()
            await calls.until(lambda: calls.first_with(Method.POLL, "answers") is not None)
            first = calls.first_with(Method.POLL, "answers")
            assert first is not None
            await calls.until(lambda: bool(sinces(calls.seen[first + 1 :], Method.POLL)))
            answered_at = max(a["answeredAt"] for a in calls.result(first)["answers"])
            assert sinces(calls.seen[: first + 1], Method.POLL)[0] == 0
            next_since = sinces(calls.seen[first + 1 :], Method.POLL)[0]
            # Lagging one ms behind the newest answer keeps a same-millisecond one.
            assert next_since == answered_at - 1
            assert before - 1 <= next_since <= wall_clock_ms()


@pytest.mark.anyio
async def test_ice_cursor_moves_past_received_candidates(server: RunningServer) -> None:
    """With strict timestamps (our server), the answerer's next `getIceCandidates` asks
    only for candidates newer than the ones it received.  Plain polling (a held poll's
    cursor is tested in test_client_longpoll.py): with long polling an aiortc offer,
    which says its gathering is complete, is not polled at all."""
    offerer = Peer("raw")
    pc = RTCPeerConnection()
    try:
        pc.createDataChannel("default")
        await pc.setLocalDescription(await pc.createOffer())
        service = f"{unique('ice')}:1.0.0"
        published = server.post(
            offerer.call(
                "publishService",
                {
                    "serviceFqn": f"{service}@{offerer.username}",
                    "offers": [{"sdp": pc.localDescription.sdp}],
                    "ttl": 300_000,
                },
                now=wall_clock_ms(),
            )
        ).json()
        assert published["success"] is True, published
        offer_id = published["result"]["offers"][0]["offerId"]
        config = ConnectionConfig(
            strict_ice_timestamps=True,
            ice_polling_interval_ms=50,
            connection_timeout_ms=15_000,
            max_reconnect_attempts=1,
        )
        with anyio.fail_after(TIMEOUT):
            async with client(server, "bob", config, long_poll=False) as bob:
                calls = Recorder(bob)
                await bob.connect_to_service(f"{service}@{offerer.username}")
                await calls.until(lambda: bool(sinces(calls.seen, Method.GET_ICE_CANDIDATES)))
                candidate = {
                    "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host",
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                }
                uploaded = server.post(
                    offerer.call(
                        "addIceCandidates",
                        {"offerId": offer_id, "candidates": [candidate]},
                        now=wall_clock_ms(),
                    )
                ).json()
                assert uploaded["success"] is True, uploaded
                await calls.until(
                    lambda: calls.first_with(Method.GET_ICE_CANDIDATES, "candidates") is not None
                )
                at = calls.first_with(Method.GET_ICE_CANDIDATES, "candidates")
                assert at is not None
                await calls.until(
                    lambda: bool(sinces(calls.seen[at + 1 :], Method.GET_ICE_CANDIDATES))
                )
                created = max(c["createdAt"] for c in calls.result(at)["candidates"])
                assert sinces(calls.seen[: at + 1], Method.GET_ICE_CANDIDATES)[0] == 0
                assert sinces(calls.seen[at + 1 :], Method.GET_ICE_CANDIDATES)[0] == created
    finally:
        await pc.close()
