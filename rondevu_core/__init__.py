"""Rondevu's sans-IO core: protocol rules and state machines, with no I/O at all.

Nothing in this package touches a socket, a clock or a random source.  Time arrives as
``now`` (monotonic milliseconds, any origin) on every input, for deadlines only; wall time
arrives only where the protocol needs it, as ``unix_ms`` on RPC results (to check the
server's timestamps).  Randomness is an injected function, so every behaviour replays
exactly under test.  Drivers (``rondevu`` and friends, in ``drivers/``) perform the I/O
the core asks for.

Modules:
- `errors`: the two error families (local misuse vs. remote misbehaviour).
- `usernames`, `fqn`, `signing`, `offer_id`: the wire protocol's pure rules (§4-§7).
- `backoff`, `buffer`: reconnection spacing and the message buffer.
- `inputs`, `actions`, `events`: the machines' vocabulary (what drivers feed, perform, emit).
- `connection` (durable connection, 10 states), `session` (ICE exchange), `pool` (offer
  pool), with `config`, `outbox` (output queues, ids, deadlines) and `replies` (reply shapes).
  `batcher` (the RPC batcher).  Drive any of these machines through the one contract of
  `machine` - ``handle(input)``, ``get_timer()``/``handle_timer(now)``, then drain
  ``next_action()``/``next_event()``; see examples/embed_sync_loop.py.
"""

from rondevu_core.backoff import Backoff, BackoffPolicy, backoff_delay
from rondevu_core.buffer import BufferedMessage, MessageBuffer, Payload
from rondevu_core.config import ConnectionConfig, PoolConfig
from rondevu_core.connection import Connection, Role, State
from rondevu_core.errors import ProtocolError, RondevuError, UsageError, ValidationError
from rondevu_core.fqn import (
    ServiceFqn,
    Version,
    is_version_compatible,
    parse_service_fqn,
    parse_version,
    validate_service_fqn,
)
from rondevu_core.offer_id import offer_id_for_sdp
from rondevu_core.outbox import Outbox
from rondevu_core.pool import OfferPool, PoolState
from rondevu_core.signing import (
    AuthMessage,
    KeyPair,
    build_message,
    check_timestamp,
    expected_context,
    parse_auth_message,
    sign_message,
    verify_signature,
)
from rondevu_core.usernames import (
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
