"""The Rondevu signaling server (wire protocol 0.5.4): request handling, storage, ASGI app.

- `RondevuServer` (`server`): all of POST /rpc without a socket -
  ``await server.handle_rpc_body(body, client_key) -> (status, json bytes)``.
- `RondevuApp` (`asgi`): the raw ASGI app (routes, CORS, body limit, lifespan).
- `ServerConfig` (`config`): every setting, also from ``RONDEVU_*`` variables.
- `storage`: the async storage interface; `sql` holds its logic once, as plans of SQL
  statements, which `sqlite_storage` and `postgres_storage` run.  `methods` holds the
  nine RPC handlers, `auth` the signature checks (`verifier`: inline or on a thread),
  `jsonwire` the JSON in and out.
- `cli`: ``rondevu serve`` (uvicorn with `uvicorn_http`: one write per response).
"""

from rondevu_server.asgi import RondevuApp
from rondevu_server.config import ServerConfig
from rondevu_server.server import RondevuServer, open_storage

__all__ = ["RondevuApp", "RondevuServer", "ServerConfig", "open_storage"]
