"""The session layer with real aiortc peers on 127.0.0.1, through an in-process server.

A stream of 10,000 messages during which the link is cut three times under both peer
connections (their UDP sockets silenced, nothing closed: only the heartbeat can tell),
received exactly once and in order by one publisher-side connection; the heartbeat
notices a publisher process that was SIGSTOPped (aiortc alone takes ~30 s); a publisher
that does not offer the layer still exchanges plain messages with our client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from rondevu import ConnectionConfig, DurableConnection, Rondevu, UsageError
from rondevu_core import events as ev
from rondevu_server.server import RondevuServer
from tests.client_testing import loopback_client
from tests.rondevu_server_testing import RunningServer, running_server, unique
from tests.session_testing import blackhole
from tests.test_client_e2e import PUBLISHER, PublisherProcess, WallClock

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
            session = conn.session_id
            assert session is not None
            assert publisher_side.session_id == session  # both ends name one session
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
        # One publisher-side connection carried the whole session, under one id.
        assert publisher_side.state == "connected"
        assert conn.session_id == publisher_side.session_id == session
        await conn.close()


@pytest.mark.anyio
async def test_messages_larger_than_a_frame_are_chunked_and_arrive_whole(
    inprocess_server: RondevuServer,
) -> None:
    async with (
        loopback_client(inprocess_server, "alice", 1, connection_config=FAST) as alice,
        loopback_client(inprocess_server, "bob", 2, connection_config=FAST) as bob,
    ):
        alice.publish_service("big:1.0.0", max_offers=1, poll_interval_ms=50)
        await alice.start_filling()
        big = bytes(range(256)) * 4096  # 1 MiB: 5 frames of at most 256 KiB (aiortc's)
        text = "é" * 100_000  # 200,000 bytes of UTF-8
        with anyio.fail_after(30):
            conn = await bob.connect_to_service("big:1.0.0@alice")
            await conn.wait_connected()
            publisher_side = await anext(alice.incoming())
            await conn.send_wait(big)
            await conn.send_wait(text)
            assert await publisher_side.receive() == big
            assert await publisher_side.receive() == text
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
            assert conn.session_id is None  # nothing agreed: plain messages
            assert publisher_side.session_id is None
            raw: list[object] = []
            publisher_side.data_channel.on("message", raw.append)
            conn.send("plain text")
            conn.send(b"plain bytes")
            assert await publisher_side.receive() == "plain text"
            assert await publisher_side.receive() == b"plain bytes"
            publisher_side.send("reply")
            assert await conn.receive() == "reply"
            with pytest.raises(UsageError, match="larger than the peer accepts"):
                conn.send(bytes(300_000))  # aiortc announces 256 KiB; nothing chunks it
            assert conn.is_connected
        # What crossed the channel is exactly what was sent: no frame, no heartbeat.
        assert raw == ["plain text", b"plain bytes"]
        await conn.close()


@pytest.fixture(scope="module")
def http_server() -> Iterator[RunningServer]:
    with running_server("sqlite", clock=WallClock()) as running:
        yield running


@pytest.mark.anyio
async def test_heartbeat_notices_a_stopped_publisher_process(
    http_server: RunningServer, tmp_path: Path
) -> None:
    """SIGSTOP freezes the publisher without closing anything: only silence tells.  The
    bound here (10 s) is far below aiortc's ~30 s; bench/bench_session.py measures it."""
    username, service = unique("pub"), f"{unique('hb')}:1.0.0"
    argv = [sys.executable, str(PUBLISHER), http_server.url, username, os.urandom(32).hex()]
    argv += [service, "50"]
    log = (tmp_path / "publisher.err").open("wb")
    process = await anyio.open_process(argv, stdout=subprocess.PIPE, stderr=log)
    log.close()
    try:
        publisher = PublisherProcess(process)
        with anyio.fail_after(20):
            await publisher.expect("ready")
        async with Rondevu.connect(
            http_server.url,
            username=unique("bob"),
            ice_servers=[],
            host_addresses=["127.0.0.1"],
            connection_config=FAST,
        ) as bob:
            with anyio.fail_after(20):
                conn = await bob.connect_to_service(f"{service}@{username}")
                await conn.wait_connected()
                conn.send("ping")
                assert await conn.receive() == "echo:ping"
            down = anyio.Event()
            reasons: list[str] = []

            def on_down(event: ev.Event) -> None:
                assert isinstance(event, ev.Disconnected)
                reasons.append(event.reason)
                down.set()

            conn.on("disconnected", on_down)
            process.send_signal(signal.SIGSTOP)
            with anyio.fail_after(10):
                await down.wait()
            assert "Heartbeat" in reasons[0]
            await conn.close()
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        with anyio.move_on_after(5):
            await process.wait()


@pytest.mark.anyio
async def test_messages_dropped_from_a_full_inbox_are_reported(
    inprocess_server: RondevuServer,
) -> None:
    async with (
        loopback_client(inprocess_server, "alice", 1, connection_config=FAST) as alice,
        loopback_client(inprocess_server, "bob", 2, connection_config=FAST) as bob,
    ):
        alice.inbox_size = 3
        alice.publish_service("inbox:1.0.0", max_offers=1, poll_interval_ms=50)
        await alice.start_filling()
        with anyio.fail_after(20):
            conn = await bob.connect_to_service("inbox:1.0.0@alice")
            await conn.wait_connected()
            publisher_side = await anext(alice.incoming())
            dropped: list[object] = []
            got_all = anyio.Event()

            def on_dropped(event: ev.Event) -> None:
                assert isinstance(event, ev.MessagesUndelivered)
                dropped.extend(event.messages)
                if len(dropped) == 2:
                    got_all.set()

            publisher_side.on("message:undelivered", on_dropped)
            for n in range(5):
                conn.send(str(n))
            await got_all.wait()
        assert dropped == ["0", "1"]
        assert [await publisher_side.receive() for _ in range(3)] == ["2", "3", "4"]
        await conn.close()


@pytest.mark.anyio
async def test_a_plain_answerer_of_our_offer_sees_only_plain_messages(
    inprocess_server: RondevuServer,
) -> None:
    """Our publisher proposes the layer in its offer; aiortc on the other side parses
    that offer (an unknown session attribute), answers without it, and the channel
    carries exactly the application's messages, with no heartbeat even when idle."""
    plain = ConnectionConfig(session=None)
    async with (
        loopback_client(inprocess_server, "alice", 1, connection_config=FAST) as alice,
        loopback_client(inprocess_server, "bob", 2, connection_config=plain) as bob,
    ):
        alice.publish_service("offer:1.0.0", max_offers=1, poll_interval_ms=50)
        await alice.start_filling()
        with anyio.fail_after(20):
            conn = await bob.connect_to_service("offer:1.0.0@alice")
            await conn.wait_connected()
            publisher_side = await anext(alice.incoming())
            core = publisher_side._core()
            assert core is not None
            assert core.offer_sdp is not None
            assert "a=x-rondevu-session:1 " in core.offer_sdp  # the offer did propose it
            # ...and aiortc, parsing it, kept nothing of it (unknown attributes go).
            assert "x-rondevu" not in conn.peer_connection.remoteDescription.sdp
            raw: list[object] = []
            conn.data_channel.on("message", raw.append)
            publisher_side.send("to a plain answerer")
            assert await conn.receive() == "to a plain answerer"
            conn.send(b"back")
            assert await publisher_side.receive() == b"back"
            # Idle for longer than the heartbeat interval: still nothing extra.
            idle = anyio.Event()
            with anyio.move_on_after(1.5):
                await idle.wait()
        assert raw == ["to a plain answerer"]
        await conn.close()


@pytest.mark.anyio
async def test_a_frame_the_session_cannot_use_is_logged_not_dropped_silently(
    inprocess_server: RondevuServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that writes past the layer (a text message on a session channel): the
    receiving connection drops the frame and says so in the log, without a listener."""
    async with (
        loopback_client(inprocess_server, "alice", 1, connection_config=FAST) as alice,
        loopback_client(inprocess_server, "bob", 2, connection_config=FAST) as bob,
    ):
        alice.publish_service("garbled:1.0.0", max_offers=1, poll_interval_ms=50)
        await alice.start_filling()
        with anyio.fail_after(20):
            conn = await bob.connect_to_service("garbled:1.0.0@alice")
            await conn.wait_connected()
            publisher_side = await anext(alice.incoming())
            with caplog.at_level("WARNING", logger="rondevu.connection"):
                conn.data_channel.send("past the layer")
                conn.send("through the layer")  # in order on the channel: after it
                assert await publisher_side.receive() == "through the layer"
        assert any("text message on a session channel" in r.getMessage() for r in caplog.records), [
            r.getMessage() for r in caplog.records
        ]
        await conn.close()
