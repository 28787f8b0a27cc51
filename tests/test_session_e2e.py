"""The session layer with real aiortc peers on 127.0.0.1, through an in-process server.

A stream of 10,000 messages during which the link is cut three times under both peer
connections (their UDP sockets silenced, nothing closed: only the heartbeat can tell),
received exactly once and in order by one publisher-side connection; a publisher that
does not offer the layer still exchanges plain messages with our client.
"""

from __future__ import annotations

import anyio
import pytest

from rondevu import ConnectionConfig, DurableConnection
from rondevu_core import events as ev
from rondevu_server.server import RondevuServer
from tests.client_testing import loopback_client
from tests.session_testing import blackhole

FAST = ConnectionConfig(reconnect_backoff_base_ms=50, reconnect_backoff_max_ms=200)
TOTAL = 10_000
CUTS = (2_500, 5_000, 7_500)


def cut(*connections: DurableConnection) -> None:
    for conn in connections:
        assert blackhole(conn.peer_connection) > 0


@pytest.mark.anyio
async def test_ten_thousand_messages_survive_three_cuts_exactly_once_in_order(
    inprocess_server: RondevuServer,
) -> None:
    async with (
        loopback_client(inprocess_server, "alice", 1, connection_config=FAST) as alice,
        loopback_client(inprocess_server, "bob", 2, connection_config=FAST) as bob,
    ):
        alice.publish_service("stream:1.0.0", max_offers=1, poll_interval_ms=50)
        await alice.start_filling()
        got: list[object] = []
        done = anyio.Event()
        with anyio.fail_after(60):
            conn = await bob.connect_to_service("stream:1.0.0@alice")
            await conn.wait_connected()
            publisher_side = await anext(alice.incoming())
            drops = 0

            def lost(_: ev.Event) -> None:
                nonlocal drops
                drops += 1

            conn.on("disconnected", lost)

            async def receive() -> None:
                async for message in publisher_side:
                    got.append(message)
                    if len(got) == TOTAL:
                        done.set()
                        return

            async with anyio.create_task_group() as group:
                group.start_soon(receive)
                for n in range(TOTAL):
                    if n in CUTS:
                        await conn.wait_connected()
                        cut(conn, publisher_side)
                    await conn.send_wait(str(n))
                await done.wait()
        assert got == [str(n) for n in range(TOTAL)]
        assert drops >= len(CUTS)
        # One publisher-side connection carried the whole session.
        assert publisher_side.state == "connected"
        await conn.close()


@pytest.mark.anyio
async def test_a_publisher_without_the_layer_gets_plain_messages(
    inprocess_server: RondevuServer,
) -> None:
    plain = ConnectionConfig(session=None)
    async with (
        loopback_client(inprocess_server, "alice", 1, connection_config=plain) as alice,
        loopback_client(inprocess_server, "bob", 2, connection_config=FAST) as bob,
    ):
        alice.publish_service("plain:1.0.0", max_offers=1, poll_interval_ms=50)
        await alice.start_filling()
        with anyio.fail_after(20):
            conn = await bob.connect_to_service("plain:1.0.0@alice")
            await conn.wait_connected()
            publisher_side = await anext(alice.incoming())
            raw: list[object] = []
            publisher_side.data_channel.on("message", raw.append)
            conn.send("plain text")
            conn.send(b"plain bytes")
            assert await publisher_side.receive() == "plain text"
            assert await publisher_side.receive() == b"plain bytes"
            publisher_side.send("reply")
            assert await conn.receive() == "reply"
        # What crossed the channel is exactly what was sent: no frame, no heartbeat.
        assert raw == ["plain text", b"plain bytes"]
        await conn.close()
