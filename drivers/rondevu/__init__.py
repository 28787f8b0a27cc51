"""Rondevu for Python: the public, async API over the sans-IO core.

Start here: ``async with Rondevu.connect(api_url) as rondevu:`` (`client`), whose
connections are `DurableConnection` objects (`connection`).  `runtime` runs the core's
state machines with real I/O (anyio on asyncio, aiortc through `rondevu_aiortc`); the
pure protocol lives in `rondevu_core`, the wire models in `rondevu_schemas`.

Signaling layer: `transport` (how a body reaches a server: HTTP or in-process),
`rpc_client` (signing and batching under anyio), `api` (`RondevuAPI`, one typed method
per RPC), `errors` (what a caller catches).  `identity` saves and loads a username with
its key pair (`Identity`).  Debug logs go to the ``rondevu`` logger.

The names below are imported on first use (PEP 562), not when ``rondevu`` is: the
``rondevu`` command imports this package, and ``rondevu --version`` must not pay for
aiortc, httpx and pydantic.  ``from rondevu import Rondevu`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rondevu.api import RondevuAPI
    from rondevu.client import IncomingConnection, Rondevu, ServiceStatus
    from rondevu.connection import (
        ConnectionClosedError,
        ConnectionFailedError,
        DurableConnection,
    )
    from rondevu.errors import (
        ClientClosedError,
        ProtocolError,
        RondevuError,
        RpcError,
        TransportError,
        UsageError,
        ValidationError,
    )
    from rondevu.identity import Identity, IdentityError
    from rondevu.rpc_client import RpcClient
    from rondevu.transport import HttpTransport, InProcessTransport, SignalingTransport
    from rondevu_core.config import ConnectionConfig, DataChannelOptions

__version__ = "0.1.0"

# Public name -> the module that defines it.
_LAZY: dict[str, str] = {
    "ClientClosedError": "rondevu.errors",
    "ConnectionClosedError": "rondevu.connection",
    "ConnectionConfig": "rondevu_core.config",
    "ConnectionFailedError": "rondevu.connection",
    "DataChannelOptions": "rondevu_core.config",
    "DurableConnection": "rondevu.connection",
    "HttpTransport": "rondevu.transport",
    "Identity": "rondevu.identity",
    "IdentityError": "rondevu.identity",
    "InProcessTransport": "rondevu.transport",
    "IncomingConnection": "rondevu.client",
    "ProtocolError": "rondevu.errors",
    "Rondevu": "rondevu.client",
    "RondevuAPI": "rondevu.api",
    "RondevuError": "rondevu.errors",
    "RpcClient": "rondevu.rpc_client",
    "RpcError": "rondevu.errors",
    "ServiceStatus": "rondevu.client",
    "SignalingTransport": "rondevu.transport",
    "TransportError": "rondevu.errors",
    "UsageError": "rondevu.errors",
    "ValidationError": "rondevu.errors",
}

__all__ = [
    "ClientClosedError",
    "ConnectionClosedError",
    "ConnectionConfig",
    "ConnectionFailedError",
    "DataChannelOptions",
    "DurableConnection",
    "HttpTransport",
    "Identity",
    "IdentityError",
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


# Hidden from type checkers, which see the imports above instead: a visible module
# __getattr__ would make every misspelt ``rondevu.Name`` type-check.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'rondevu' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
