"""Reconnection held and released by the application (`pause_reconnect` /
`resume_reconnect`), with real aiortc peers on 127.0.0.1 through an in-process server.

The link is cut the way the demo cuts it: the offerer closes its raw peer connection,
which the answerer's machine sees as a failure and answers with a reconnection.
"""

from __future__ import annotations

import anyio
import pytest

from rondevu import (
    ConnectionClosedError,
    ConnectionConfig,
    ConnectionFailedError,
)
from rondevu_core import events as ev
from rondevu_server.server import RondevuServer
from tests.client_testing import loopback_client

TIMEOUT = 20
FAST = ConnectionConfig(reconnect_backoff_base_ms=50, reconnect_backoff_max_ms=200)


@pytest.mark.anyio
async def test_paused_reconnection_waits_for_resume(inprocess_server: RondevuServer) -> None:
    async with (
        loopback_client(inprocess_server, "alice", 1, connection_config=FAST) as alice,
        loopback_client(inprocess_server, "bob", 2, connection_config=FAST) as bob,
    ):
        alice.publish_service("chat:1.0.0", max_offers=1, poll_interval_ms=50)
        await alice.start_filling()
        seen: list[ev.Event] = []
        failed = anyio.Event()
        reconnected = anyio.Event()

        def record(event: ev.Event) -> None:
            seen.append(event)
            if isinstance(event, ev.Failed):
                failed.set()
            if isinstance(event, ev.ReconnectSuccess):
                reconnected.set()

        with anyio.fail_after(TIMEOUT):
            conn = await bob.connect_to_service("chat:1.0.0@alice")
            conn.on("*", record)
            await conn.wait_connected()
            offerer_side = await anext(alice.incoming())
            conn.pause_reconnect()
            await offerer_side.peer_connection.close()  # cut the link
            await failed.wait()
            # A failure while paused schedules nothing: the attempt is held.
            assert not any(isinstance(e, ev.ReconnectScheduled) for e in seen)
            conn.send("held while paused")
            conn.resume_reconnect()
            await reconnected.wait()
            await conn.wait_connected()
        assert any(isinstance(e, ev.ReconnectScheduled) for e in seen)
        assert any(isinstance(e, ev.MessageReplayed) for e in seen)
        await conn.close()
        with pytest.raises(ConnectionClosedError):
            conn.pause_reconnect()


@pytest.mark.anyio
async def test_a_connection_that_gave_up_says_so(inprocess_server: RondevuServer) -> None:
    quick = ConnectionConfig(
        reconnect_backoff_base_ms=10, reconnect_backoff_max_ms=20, max_reconnect_attempts=2
    )
    async with loopback_client(inprocess_server, "bob", 2, connection_config=FAST) as bob:
        conn = await bob.connect_to_service("nothing:1.0.0@nobody", connection_config=quick)
        exhausted = anyio.Event()
        conn.on("reconnect:exhausted", lambda _: exhausted.set())
        with anyio.fail_after(TIMEOUT):
            with pytest.raises(ConnectionFailedError, match="Service not found"):
                await conn.wait_connected()
            await exhausted.wait()
        with pytest.raises(ConnectionFailedError, match="failed for good"):
            conn.send("too late")
        assert conn.state == "failed"
