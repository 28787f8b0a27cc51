"""`Rondevu.start_filling` returns once the offers are on the server (as 0.18.9 awaits
its first fill), and reports a failed first publication to its caller."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rondevu import InProcessTransport, Rondevu, RpcError
from rondevu_core.signing import KeyPair
from rondevu_schemas.methods import ServiceEntry
from rondevu_server.config import ServerConfig
from rondevu_server.server import RondevuServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[RondevuServer]:
    server = await RondevuServer.open(ServerConfig())
    try:
        yield server
    finally:
        await server.aclose()


def client(server: RondevuServer, username: str, seed: int) -> Rondevu:
    return Rondevu.connect(
        transport=InProcessTransport(server),
        username=username,
        keypair=KeyPair.from_seed(bytes([seed]) * 32),
        ice_servers=[],
        host_addresses=["127.0.0.1"],
    )


@pytest.mark.anyio
async def test_offers_are_discoverable_when_start_filling_returns(server: RondevuServer) -> None:
    async with client(server, "alice", 1) as alice, client(server, "bob", 2) as bob:
        alice.publish_service("chat:1.0.0", max_offers=2)
        await alice.start_filling()
        found = await bob.find_service("chat:1.0.0@alice")
        assert isinstance(found, ServiceEntry)
        assert found.username == "alice"
        assert alice.get_service_status().offer_count == 2


@pytest.mark.anyio
async def test_a_failed_first_publication_is_raised(server: RondevuServer) -> None:
    async with client(server, "alice", 1) as alice:
        alice.publish_service("chat:1.0.0")
        await alice.start_filling()  # alice is now claimed by key 1
    async with client(server, "alice", 3) as impostor:
        impostor.publish_service("chat:1.0.0")
        with pytest.raises(RpcError, match="Invalid signature"):
            await impostor.start_filling()
        await impostor.stop_filling()
        assert not impostor.get_service_status().filling
