"""What the client keeps for an application that has not read it yet is bounded.

A peer may send 256 KiB messages as fast as it likes and reconnect as often as it likes;
an application listening with callbacks never reads the inbox or `incoming()`.  Real
aiortc peers on loopback through an in-process `RondevuServer`; every wait is on an
event under ``anyio.fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, aclosing

import anyio
import pytest

from rondevu import DurableConnection, Rondevu
from rondevu.client import IncomingConnection
from rondevu_core import events as ev
from rondevu_server.server import RondevuServer
from tests.client_testing import loopback_client
from tests.rondevu_server_testing import unique

TIMEOUT = 30.0


async def publish(client: Rondevu, service: str) -> None:
    client.publish_service(service, max_offers=1, poll_interval_ms=50)
    await client.start_filling()


async def first_incoming(client: Rondevu) -> DurableConnection:
    incoming = client.incoming()
    assert isinstance(incoming, AsyncGenerator)
    async with aclosing(incoming):
        return await anext(incoming)


@pytest.mark.anyio
async def test_messages_handled_by_listeners_are_not_kept(
    inprocess_server: RondevuServer,
) -> None:
    service = f"{unique('chat')}:1.0.0"
    got: list[object] = []
    all_in = anyio.Event()
    opened: list[DurableConnection] = []

    def on_open(incoming: IncomingConnection) -> None:
        def on_message(event: ev.Message) -> None:
            got.append(event.data)
            if len(got) == 50:
                all_in.set()

        incoming.connection.on("message", on_message)  # type: ignore[arg-type]
        opened.append(incoming.connection)

    with anyio.fail_after(TIMEOUT):
        async with (
            loopback_client(inprocess_server, unique("alice"), 1) as alice,
            loopback_client(inprocess_server, unique("bob"), 2) as bob,
        ):
            alice.on("connection:opened", on_open)
            await publish(alice, service)
            conn = await bob.connect_to_service(f"{service}@{alice.username}")
            await conn.wait_connected()
            for i in range(50):
                conn.send(f"m{i}")
            await all_in.wait()
            assert got == [f"m{i}" for i in range(50)]
            assert opened[0].unread == 0


@pytest.mark.anyio
async def test_the_inbox_keeps_the_newest_messages_within_its_byte_bound(
    inprocess_server: RondevuServer,
) -> None:
    service = f"{unique('chat')}:1.0.0"
    with anyio.fail_after(TIMEOUT):
        async with (
            loopback_client(inprocess_server, unique("alice"), 3) as alice,
            loopback_client(inprocess_server, unique("bob"), 4) as bob,
        ):
            alice.inbox_bytes = 4_000
            await publish(alice, service)
            conn = await bob.connect_to_service(f"{service}@{alice.username}")
            await conn.wait_connected()
            theirs = await first_incoming(alice)
            await theirs.wait_connected()
            seen = 0
            events = theirs.events()
            assert isinstance(events, AsyncGenerator)
            async with aclosing(events) as stream:
                for i in range(10):
                    conn.send(f"{i}" * 1_000)
                async for event in stream:
                    if isinstance(event, ev.Message):
                        seen += 1
                        if seen == 10:
                            break
            assert theirs.unread == 4
            assert [await theirs.receive() for _ in range(4)] == [
                f"{i}" * 1_000 for i in (6, 7, 8, 9)
            ]


@pytest.mark.anyio
async def test_unconsumed_incoming_connections_are_bounded(
    inprocess_server: RondevuServer,
) -> None:
    service = f"{unique('chat')}:1.0.0"
    opened: list[DurableConnection] = []
    four = anyio.Event()

    def on_open(incoming: IncomingConnection) -> None:
        opened.append(incoming.connection)
        if len(opened) == 4:
            four.set()

    with anyio.fail_after(TIMEOUT):
        async with loopback_client(inprocess_server, unique("alice"), 5) as alice:
            alice.incoming_backlog = 2
            alice.on("connection:opened", on_open)
            await publish(alice, service)
            async with AsyncExitStack() as peers:  # all four stay connected meanwhile
                for seed in range(6, 10):
                    bob = await peers.enter_async_context(
                        loopback_client(inprocess_server, unique("bob"), seed)
                    )
                    conn = await bob.connect_to_service(f"{service}@{alice.username}")
                    await conn.wait_connected()
                await four.wait()
                kept = [await first_incoming(alice) for _ in range(2)]
                assert [c.connection_id for c in kept] == [c.connection_id for c in opened[2:]]
