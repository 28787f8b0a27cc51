"""Rondevu for Python: find peers by name, then talk to them directly over WebRTC.

A peer claims a username on a signaling server (``rondevu serve``) and publishes
services such as ``chat:1.0.0@alice``; other peers connect to them by name.  The
messages then flow peer to peer, over data channels that reconnect on their own and
replay what was sent while the link was down::

    import anyio
    from rondevu import Rondevu

    async def main() -> None:
        # On one machine with no network, add ice_servers=[] and
        # host_addresses=["127.0.0.1"] (the default asks Google's STUN server).
        async with Rondevu.connect("http://127.0.0.1:3000") as client:
            conn = await client.connect_to_service("chat:1.0.0@alice")
            conn.send("hello")  # kept until connected
            await conn.wait_connected(timeout=30)
            print(await conn.receive())

    anyio.run(main)

Where to start:

- `Rondevu`: one identity on one signaling server; it connects to services
  (``connect_to_service``) and publishes them (``publish_service``, ``start_filling``,
  ``incoming``).  Use it in ``async with``.
- `DurableConnection`: one connection to a peer (``send``, ``receive``, ``async for``,
  ``on``, ``wait_connected``, ``close``).
- `Identity`: a username with its key pair, saved as an identity file (the file
  ``rondevu keygen`` writes), so a program keeps its name across runs.
- `ConnectionConfig` (timeouts, reconnection, buffering) and `DataChannelOptions` (the
  data channel's reliability).
- Errors, all under `RondevuError`: `RpcError` (the server refused a call),
  `TransportError` (no usable answer from the server), `ProtocolError` (a reply of the
  wrong shape), `ConnectionClosedError`, `ConnectionFailedError`, `ClientClosedError`,
  `ValidationError` (bad input), `UsageError` (a call at the wrong moment),
  `IdentityError`.  Waits with a timeout raise the built-in `TimeoutError`.
- Lower layers: `RondevuAPI` (one typed method per signaling call), `RpcClient`
  (signing and batching), and the transports `HttpTransport`, `InProcessTransport`
  (a server in the same process, no socket), `SignalingTransport` (their interface).

Debug logs go to the standard ``logging`` logger ``rondevu``.  The names above are
imported on first use, so ``import rondevu`` (and ``rondevu --version``) stays fast.
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
        UsernameTakenError,
        ValidationError,
    )
    from rondevu.identity import Identity, IdentityError
    from rondevu.rpc_client import RpcClient
    from rondevu.transport import HttpTransport, InProcessTransport, SignalingTransport
    from rondevu_core.config import ConnectionConfig, DataChannelOptions
    from rondevu_core.delivery import SessionConfig, WindowFullError

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
    "SessionConfig": "rondevu_core.delivery",
    "SignalingTransport": "rondevu.transport",
    "TransportError": "rondevu.errors",
    "UsageError": "rondevu.errors",
    "UsernameTakenError": "rondevu.errors",
    "ValidationError": "rondevu.errors",
    "WindowFullError": "rondevu_core.delivery",
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
    "SessionConfig",
    "SignalingTransport",
    "TransportError",
    "UsageError",
    "UsernameTakenError",
    "ValidationError",
    "WindowFullError",
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
