"""The public client under concurrent use: a burst of sends larger than a peer worker's
queue, several tasks waiting for the same connection at once, an event iterator that
started late, a start_filling() left waiting by a closing client, and async listeners."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from rondevu import ClientClosedError, Rondevu
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


@pytest.mark.anyio
async def test_events_collects_from_the_call_not_the_first_iteration(
    inprocess_server: RondevuServer,
) -> None:
    async with loopback_client(inprocess_server, "bob", 2) as bob:
        conn = await bob.connect_to_service("nothing:1.0.0@nobody")
        events = conn.events()
        conn.send("queued")  # emits message:buffered at once, before any iteration
        with anyio.fail_after(TIMEOUT):
            names = [(await anext(events)).name for _ in range(2)]
        assert "message:buffered" in names
        await conn.close()


class SilentTransport:
    """A signaling transport whose server never answers."""

    async def send(self, body: Any) -> Any:
        await anyio.sleep_forever()

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_closing_the_client_wakes_a_pending_start_filling() -> None:
    alice = Rondevu.connect(transport=SilentTransport(), username="alice", ice_servers=[])
    failure: list[BaseException] = []

    async def fill() -> None:
        try:
            await alice.start_filling(timeout=None)
        except ClientClosedError as exc:
            failure.append(exc)

    async with alice:
        alice.publish_service("chat:1.0.0")
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as group:
                group.start_soon(fill)
                await anyio.wait_all_tasks_blocked()
                await alice.aclose()
    assert failure, "start_filling must raise ClientClosedError when the client closes"


@pytest.mark.anyio
async def test_async_client_listeners_are_awaited(inprocess_server: RondevuServer) -> None:
    ran = anyio.Event()

    async def on_published(_event: object) -> None:
        await anyio.lowlevel.checkpoint()
        ran.set()

    async with loopback_client(inprocess_server, "alice", 1) as alice:
        alice.on("offers:published", on_published)
        alice.publish_service("chat:1.0.0")
        await alice.start_filling()
        with anyio.fail_after(TIMEOUT):
            await ran.wait()
