"""Building `Rondevu` clients for tests: loopback-only WebRTC, a fixed identity."""

from __future__ import annotations

from typing import Any

from rondevu import InProcessTransport, Rondevu
from rondevu_core.rules.signing import KeyPair
from rondevu_server.server import RondevuServer


def loopback_client(server: RondevuServer, username: str, seed: int, **options: Any) -> Rondevu:
    """A client of ``server`` (in-process) as ``username`` with the key of ``seed``;
    no ICE servers and host candidates on 127.0.0.1 only."""
    return Rondevu.connect(
        transport=InProcessTransport(server),
        username=username,
        keypair=KeyPair.from_seed(bytes([seed]) * 32),
        ice_servers=[],
        host_addresses=["127.0.0.1"],
        **options,
    )
