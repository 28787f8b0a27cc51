"""`Rondevu.start_filling` returns once the offers are on the server (as 0.18.9 awaits
its first fill), and reports a failed first publication to its caller."""

from __future__ import annotations

import pytest

from rondevu import RpcError
from rondevu_schemas.methods import ServiceEntry
from rondevu_server.server import RondevuServer
from tests.client_testing import loopback_client


@pytest.mark.anyio
async def test_offers_are_discoverable_when_start_filling_returns(
    inprocess_server: RondevuServer,
) -> None:
    async with (
        loopback_client(inprocess_server, "alice", 1) as alice,
        loopback_client(inprocess_server, "bob", 2) as bob,
    ):
        alice.publish_service("chat:1.0.0", max_offers=2)
        await alice.start_filling()
        found = await bob.find_service("chat:1.0.0@alice")
        assert isinstance(found, ServiceEntry)
        assert found.username == "alice"
        assert alice.get_service_status().offer_count == 2


@pytest.mark.anyio
async def test_a_failed_first_publication_is_raised(inprocess_server: RondevuServer) -> None:
    async with loopback_client(inprocess_server, "alice", 1) as alice:
        alice.publish_service("chat:1.0.0")
        await alice.start_filling()  # alice is now claimed by key 1
    async with loopback_client(inprocess_server, "alice", 3) as impostor:
        impostor.publish_service("chat:1.0.0")
        with pytest.raises(RpcError, match="Invalid signature"):
            await impostor.start_filling()
        await impostor.stop_filling()
        assert not impostor.get_service_status().filling
