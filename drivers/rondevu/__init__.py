"""Rondevu for Python: the public, async API over the sans-IO core.

The client (``Rondevu``), the CLI and the runtime drivers grow here; the pure protocol
lives in `rondevu_core`, the wire models in `rondevu_schemas`.

Signaling layer: `transport` (how a body reaches a server: HTTP or in-process),
`rpc_client` (signing and batching under anyio), `api` (`RondevuAPI`, one typed method
per RPC), `errors` (what a caller catches).  Debug logs go to the ``rondevu`` logger.
"""

from rondevu.api import RondevuAPI
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
from rondevu.transport import HttpTransport, InProcessTransport, SignalingTransport

__version__ = "0.1.0"

__all__ = [
    "ClientClosedError",
    "HttpTransport",
    "InProcessTransport",
    "ProtocolError",
    "RondevuAPI",
    "RondevuError",
    "RpcClient",
    "RpcError",
    "SignalingTransport",
    "TransportError",
    "UsageError",
    "ValidationError",
    "__version__",
]
