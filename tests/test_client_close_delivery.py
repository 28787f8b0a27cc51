"""Messages sent before a close are delivered: ``send(); await close()`` loses nothing.

WebRTC's close (aiortc's too) aborts the SCTP association and drops whatever is still
queued; before the linger (``ConnectionConfig.close_linger_ms``) every one of these
messages was lost.  Real aiortc peers on loopback through an in-process
`RondevuServer`; every wait is on an event under ``anyio.fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import anyio
import pytest

from rondevu import DurableConnection, Rondevu
from rondevu.connection import ConnectionClosedError
from rondevu_server.server import RondevuServer
from tests.client_testing import loopback_client
from tests.rondevu_server_testing import unique

TIMEOUT = 30.0
WORDS = [f"{i}:" + "x" * 6_000 for i in range(20)] + ["bye"]


async def connected_pair(
    alice: Rondevu, bob: Rondevu
) -> tuple[DurableConnection, DurableConnection]:
    """bob's connection to alice's fresh service, and alice's side of it, both up."""
    service = f"{unique('chat')}:1.0.0"
    alice.publish_service(service, max_offers=1, poll_interval_ms=50)
    await alice.start_filling()
    conn = await bob.connect_to_service(f"{service}@{alice.username}")
    await conn.wait_connected()
    incoming = alice.incoming()
    assert isinstance(incoming, AsyncGenerator)
    async with aclosing(incoming):
        theirs = await anext(incoming)
    await theirs.wait_connected()
    return conn, theirs


async def received_until_bye(conn: DurableConnection) -> list[object]:
    got: list[object] = []
    try:
        while got[-1:] != ["bye"]:
            got.append(await conn.receive())
    except ConnectionClosedError:
        pass
    return got


@pytest.mark.anyio
async def test_messages_sent_before_close_arrive(inprocess_server: RondevuServer) -> None:
    with anyio.fail_after(TIMEOUT):
        async with (
            loopback_client(inprocess_server, unique("alice"), 21) as alice,
            loopback_client(inprocess_server, unique("bob"), 22) as bob,
        ):
            conn, theirs = await connected_pair(alice, bob)
            for word in WORDS:
                conn.send(word)
            await conn.close()
            assert await received_until_bye(theirs) == WORDS


@pytest.mark.anyio
async def test_messages_sent_before_the_client_closes_arrive(
    inprocess_server: RondevuServer,
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with loopback_client(inprocess_server, unique("alice"), 23) as alice:
            async with loopback_client(inprocess_server, unique("bob"), 24) as bob:
                conn, theirs = await connected_pair(alice, bob)
                for word in WORDS:
                    conn.send(word)
            # bob's whole client is closed here
            assert await received_until_bye(theirs) == WORDS
