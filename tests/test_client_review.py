"""Regressions found in review: a burst of sends larger than a peer worker's queue, and
several tasks waiting for the same connection at once."""

from __future__ import annotations

import anyio
import pytest

from rondevu_server.server import RondevuServer
from tests.client_testing import loopback_client

TIMEOUT = 20


@pytest.mark.anyio
async def test_a_burst_of_sends_is_delivered_whole(inprocess_server: RondevuServer) -> None:
    async with (
        loopback_client(inprocess_server, "alice", 1) as alice,
        loopback_client(inprocess_server, "bob", 2) as bob,
    ):
        alice.publish_service("chat:1.0.0", max_offers=1, poll_interval_ms=50)
        await alice.start_filling()
        with anyio.fail_after(TIMEOUT):
            conn = await bob.connect_to_service("chat:1.0.0@alice")
            await conn.wait_connected()
            offerer_side = await anext(alice.incoming())
            await offerer_side.wait_connected()
            count = 1500  # more than a peer worker's queue held at once
            for i in range(count):
                conn.send(str(i))  # no await in between: one burst
            received = [await offerer_side.receive() for _ in range(count)]
        assert received == [str(i) for i in range(count)]


@pytest.mark.anyio
async def test_two_tasks_wait_for_the_same_connection(inprocess_server: RondevuServer) -> None:
    async with (
        loopback_client(inprocess_server, "alice", 1) as alice,
        loopback_client(inprocess_server, "bob", 2) as bob,
    ):
        alice.publish_service("chat:1.0.0", max_offers=1, poll_interval_ms=50)
        await alice.start_filling()
        conn = await bob.connect_to_service("chat:1.0.0@alice")
        done: list[int] = []

        async def wait(n: int) -> None:
            await conn.wait_connected()
            done.append(n)

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as group:
                group.start_soon(wait, 1)
                group.start_soon(wait, 2)
        assert sorted(done) == [1, 2]

        received: list[str | bytes] = []

        async def receive() -> None:
            received.append(await conn.receive())

        offerer_side = await anext(alice.incoming())
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as group:
                group.start_soon(receive)
                group.start_soon(receive)
                await anyio.wait_all_tasks_blocked()
                offerer_side.send("one")
                offerer_side.send("two")
        assert sorted(received) == ["one", "two"]
