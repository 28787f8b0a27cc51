"""Rondevu's sans-IO core: protocol rules and state machines, with no I/O at all.

Nothing in this package touches a socket, a clock or a random source.  Time arrives as
``now`` (monotonic milliseconds, any origin) on every input, for deadlines only; wall time
arrives only where the protocol needs it, as ``unix_ms`` on RPC results (to check the
server's timestamps).  Randomness is an injected function, so every behaviour replays
exactly under test.  Drivers (``rondevu`` and friends, in ``drivers/``) perform the I/O
the core asks for.

The package, in three kinds of module:

- **rules** (`rondevu_core.rules`): the wire protocol's pure functions and value types -
  names, ids and signatures (§4-§7), ICE candidates in SDP (§9), reply shapes, which
  failures to retry, backoff, and the checks only a server applies (`rules.server_params`).
- **vocabulary**: `inputs`, `actions`, `events` (what drivers feed, perform and hand to
  the application), `rpc` (calls and their outcomes), `errors` (local misuse vs. remote
  misbehaviour), `config`.
- **machines**: `connection` (the durable connection, 10 states), `ice_exchange` (one peer
  connection's candidate exchange), `pool` (the offer pool), `batcher` (the RPC batcher) and
  `delivery` (the session layer on the data channel), with their plumbing `buffer`
  (messages kept while down) and `outbox` (output queues, ids, deadlines).  Drive any of
  them through the one contract of `machine` - ``handle(input)``,
  ``get_timer()``/``handle_timer(now)``, then drain ``next_action()``/``next_event()``;
  see examples/embed_sync_loop.py.
"""

from rondevu_core.buffer import BufferedMessage, MessageBuffer, Payload
from rondevu_core.config import ConnectionConfig, PoolConfig
from rondevu_core.connection import Connection, Role, State
from rondevu_core.errors import ProtocolError, RondevuError, UsageError, ValidationError
from rondevu_core.outbox import Outbox
from rondevu_core.pool import OfferPool, PoolState
from rondevu_core.rules.backoff import Backoff, BackoffPolicy, backoff_delay
from rondevu_core.rules.fqn import (
    ServiceFqn,
    Version,
    is_version_compatible,
    parse_service_fqn,
    parse_version,
    validate_service_fqn,
)
from rondevu_core.rules.offer_id import offer_id_for_sdp
from rondevu_core.rules.signing import (
    AuthMessage,
    KeyPair,
    build_message,
    check_timestamp,
    expected_context,
    parse_auth_message,
    sign_message,
    verify_signature,
)
from rondevu_core.rules.usernames import (
    generate_anonymous_username,
    is_valid_username,
    validate_username,
)

__all__ = [
    "AuthMessage",
    "Backoff",
    "BackoffPolicy",
    "BufferedMessage",
    "Connection",
    "ConnectionConfig",
    "KeyPair",
    "MessageBuffer",
    "OfferPool",
    "Outbox",
    "Payload",
    "PoolConfig",
    "PoolState",
    "ProtocolError",
    "Role",
    "RondevuError",
    "ServiceFqn",
    "State",
    "UsageError",
    "ValidationError",
    "Version",
    "backoff_delay",
    "build_message",
    "check_timestamp",
    "expected_context",
    "generate_anonymous_username",
    "is_valid_username",
    "is_version_compatible",
    "offer_id_for_sdp",
    "parse_auth_message",
    "parse_service_fqn",
    "parse_version",
    "sign_message",
    "validate_service_fqn",
    "validate_username",
    "verify_signature",
]
