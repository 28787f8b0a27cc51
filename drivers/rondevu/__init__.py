"""Rondevu for Python: the public, async API over the sans-IO core.

Start here: ``async with Rondevu.connect(api_url) as rondevu:`` (`client`), whose
connections are `DurableConnection` objects (`connection`).  `runtime` runs the core's
state machines with real I/O (anyio on asyncio, aiortc through `rondevu_aiortc`); the
pure protocol lives in `rondevu_core`, the wire models in `rondevu_schemas`.

Signaling layer: `transport` (how a body reaches a server: HTTP or in-process),
`rpc_client` (signing and batching under anyio), `api` (`RondevuAPI`, one typed method
per RPC), `errors` (what a caller catches).  Debug logs go to the ``rondevu`` logger.
"""

from rondevu.api import RondevuAPI
from rondevu.client import IncomingConnection, Rondevu, ServiceStatus
from rondevu.connection import ConnectionClosedError, ConnectionFailedError, DurableConnection
from rondevu.errors import (
    ClientClosedError,
    ProtocolError,
    RondevuError,
    RpcError,
    TransportError,
    UsageError,
    ValidationError,
)
from rondevu.rpc_client import RpcClient
from rondevu.runtime import DataChannelOptions
from rondevu.transport import HttpTransport, InProcessTransport, SignalingTransport
from rondevu_core.config import ConnectionConfig

__version__ = "0.1.0"

__all__ = [
    "ClientClosedError",
    "ConnectionClosedError",
    "ConnectionConfig",
    "ConnectionFailedError",
    "DataChannelOptions",
    "DurableConnection",
    "HttpTransport",
    "InProcessTransport",
    "IncomingConnection",
    "ProtocolError",
    "Rondevu",
    "RondevuAPI",
    "RondevuError",
    "RpcClient",
    "RpcError",
    "ServiceStatus",
    "SignalingTransport",
    "TransportError",
    "UsageError",
    "ValidationError",
    "__version__",
]
