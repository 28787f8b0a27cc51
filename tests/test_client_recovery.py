"""The client's side of recovery (issue #11), against a real in-process server: a name
held by another key is one typed error and no retries; leaving the client withdraws its
offers; offers the server lost are published again, with ``service:republished``."""

from __future__ import annotations

import anyio
import pytest

from rondevu import RpcError, UsernameTakenError
from rondevu_core import events as ev
from rondevu_core.rpc import Method
from rondevu_server.server import RondevuServer
from tests.client_testing import loopback_client


@pytest.mark.anyio
async def test_a_name_held_by_another_key_is_a_typed_error_and_is_not_retried(
    inprocess_server: RondevuServer,
) -> None:
    async with loopback_client(inprocess_server, "alice", 1) as alice:
        alice.publish_service("chat:1.0.0")
        await alice.start_filling()
    async with loopback_client(inprocess_server, "alice", 3) as impostor:
        permanent: list[ev.PermanentError] = []
        impostor.on("error:permanent", permanent.append)
        impostor.publish_service("chat:1.0.0")
        with pytest.raises(UsernameTakenError) as raised:
            await impostor.start_filling()
        assert raised.value.username == "alice"
        assert raised.value.permanent
        assert "taken by another key" in str(raised.value)
        assert [(e.operation, e.kind) for e in permanent] == [("publishService", "identity")]
        assert not impostor.get_service_status().filling  # the pool stopped by itself
        # Nothing more is scheduled: a retry could only fail the same way.
        pool = impostor._pool
        assert pool is not None
        assert pool.machine.get_timer() is None


@pytest.mark.anyio
async def test_a_connection_refused_for_its_name_ends_with_the_typed_error(
    inprocess_server: RondevuServer,
) -> None:
    """The answering side too: a peer whose name is held by another key gets
    `UsernameTakenError` from `wait_connected` at once, not a retried `Invalid
    signature` and a generic failure."""
    async with loopback_client(inprocess_server, "alice", 1) as alice:
        alice.publish_service("chat:1.0.0")
        await alice.start_filling()
        async with loopback_client(inprocess_server, "alice", 3) as impostor:
            conn = await impostor.connect_to_service("chat:1.0.0@alice")
            scheduled: list[object] = []
            conn.on("reconnect:scheduled", scheduled.append)
            with anyio.fail_after(10), pytest.raises(UsernameTakenError) as raised:
                await conn.wait_connected()
            assert raised.value.username == "alice"
            assert scheduled == []  # a permanent refusal is not retried


@pytest.mark.anyio
async def test_temporary_and_permanent_refusals_are_told_apart() -> None:
    assert not RpcError(Method.GET_SERVICE, "Service not found").permanent
    assert not RpcError(Method.PUBLISH_SERVICE, "Rate limit exceeded, slow down").permanent
    assert RpcError(Method.GET_SERVICE, "Unknown method: getService").permanent
    assert RpcError(Method.PUBLISH_SERVICE, "Invalid signature").permanent


@pytest.mark.anyio
async def test_leaving_the_client_withdraws_its_offers(inprocess_server: RondevuServer) -> None:
    async with loopback_client(inprocess_server, "bob", 2) as bob:
        async with loopback_client(inprocess_server, "alice", 1) as alice:
            alice.publish_service("chat:1.0.0", max_offers=2)
            await alice.start_filling()
            await bob.find_service("chat:1.0.0@alice")  # published
        with pytest.raises(RpcError, match=r"^Service not found$"):
            await bob.find_service("chat:1.0.0@alice")


@pytest.mark.anyio
async def test_offers_deleted_behind_the_publishers_back_are_published_again(
    inprocess_server: RondevuServer,
) -> None:
    async with loopback_client(inprocess_server, "alice", 1) as alice:
        republished: list[ev.ServiceRepublished] = []
        done = anyio.Event()

        def note(event: ev.ServiceRepublished) -> None:
            republished.append(event)
            done.set()

        alice.on("service:republished", note)
        alice.publish_service("chat:1.0.0", max_offers=2, poll_interval_ms=200)
        await alice.start_filling()
        # What a server restart with in-memory storage amounts to for this service.
        await alice.api.delete_service("chat:1.0.0@alice")
        with anyio.fail_after(10):
            await done.wait()
        assert republished[0].reason == "service gone from the server"
        assert len(republished[0].offer_ids) == 2
        found = await alice.find_service("chat:1.0.0@alice")
        assert getattr(found, "offer_id", None) in republished[0].offer_ids


@pytest.mark.anyio
async def test_a_client_cancelled_from_outside_still_withdraws_its_offers(
    inprocess_server: RondevuServer,
) -> None:
    # A cancel scope around the client ends its tasks before it closes: the withdrawal
    # must still leave, sent from the closing task itself.
    async with loopback_client(inprocess_server, "bob", 2) as bob:
        with anyio.CancelScope() as scope:
            async with loopback_client(inprocess_server, "alice", 1) as alice:
                alice.publish_service("chat:1.0.0")
                await alice.start_filling()
                await bob.find_service("chat:1.0.0@alice")  # published
                scope.cancel()
                await anyio.sleep_forever()
        with pytest.raises(RpcError, match=r"^Service not found$"):
            await bob.find_service("chat:1.0.0@alice")
