"""Server settings: one frozen dataclass, filled from defaults, environment and CLI.

Every field can be set from the environment as ``RONDEVU_<FIELD NAME IN CAPITALS>``
(``RONDEVU_PORT``, ``RONDEVU_MAX_SDP_CHARS``...); command-line flags override it.  The
protocol defaults are the 0.5.4 server's.  The bounds are ours (§11 says the
original has none): each default accepts everything an honest 0.18.x client sends (SDPs
up to 64 KiB, exactly the SDP limit; 100 offers per publish, 100 calls per batch, a few
hundred candidates per offer), so only abuse hits them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from rondevu_schemas.http import DEFAULT_VERSION

__all__ = ["ENV_PREFIX", "LOOPBACK_PREFIXES", "ServerConfig"]

ENV_PREFIX = "RONDEVU_"
LOOPBACK_PREFIXES = ("127.", "::1", "::ffff:127.")
"""How a loopback client address starts (exempt from per-client limits by default)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything `RondevuServer` and ``rondevu serve`` can be told."""

    host: str = "127.0.0.1"
    """Interface to bind; loopback unless asked otherwise."""
    port: int = 3000
    """TCP port to listen on."""
    db: str = ":memory:"
    """``:memory:``, a SQLite file path or ``sqlite:///path``, or a ``postgresql://`` DSN."""
    db_schema: str = ""
    """PostgreSQL schema to keep the tables in (created if missing); empty = the default."""
    db_pool_size: int = 10
    """PostgreSQL connections per server process."""
    reuse_port: bool = False
    """Bind with SO_REUSEPORT so several processes can share one port (Linux)."""
    workers: int = 1
    """Server processes ``rondevu serve`` runs on the one port (each binds it with
    SO_REUSEPORT); more than one needs a database they share (a SQLite file or
    PostgreSQL), never ``:memory:``."""
    log_level: str = "info"
    """Python logging level name for the log lines on stderr."""
    log_format: str = "auto"
    """``json``, ``text``, or ``auto``: text on a terminal, JSON otherwise."""
    version: str = DEFAULT_VERSION
    """Shown by ``GET /`` and ``GET /health`` (the original's ``VERSION``)."""
    cors_origins: tuple[str, ...] = ("*",)
    """Allowed origins; ``*`` echoes any origin (§2)."""

    offer_default_ttl: int = 60_000
    """Offer lifetime in ms when ``ttl`` is absent."""
    offer_min_ttl: int = 60_000
    """Lower clamp of ``ttl`` in ms."""
    offer_max_ttl: int = 86_400_000
    """Upper clamp of ``ttl`` in ms."""
    cleanup_interval: int = 60_000
    """Period of the expired-row cleanup in ms."""
    max_offers_per_request: int = 100
    """Offers in one publishService call (the original's MAX_OFFERS_PER_REQUEST)."""

    max_body_bytes: int = 8 * 1024 * 1024
    """Largest accepted POST /rpc body (100 offers of 64 KiB fit)."""
    max_sdp_chars: int = 65_536
    """Largest offer or answer SDP, in JavaScript string length."""
    max_candidates_per_request: int = 200
    """Candidates in one addIceCandidates call."""
    max_candidates_per_offer: int = 1_000
    """Candidates stored for one offer, both directions together."""
    max_candidate_bytes: int = 4_096
    """Largest candidate, as compact JSON."""
    max_candidate_depth: int = 10
    """Deepest JSON nesting inside one candidate."""
    max_offers_per_user: int = 1_000
    """Live offers one username may hold."""
    max_total_offers: int = 100_000
    """Live offers in the whole deployment."""
    max_response_bytes: int = 8 * 1024 * 1024
    """A batch stops running calls once its reply has grown past this; the calls left
    are answered with an error, not run (a single call is never cut short)."""
    max_header_bytes: int = 65_536
    """Largest request line plus headers (or chunked trailers) of one HTTP request, else
    431 and close; 0 disables the limit."""
    request_timeout: float = 30.0
    """Seconds a client has to send one whole request (headers and body) from its first
    byte, else 408 and close; a new connection silent that long is closed; 0 disables."""
    max_connections: int = 4_096
    """Open HTTP connections (or requests in progress) at once; past it requests get 503
    and their connection is closed; 0 disables."""
    max_connections_per_client: int = 256
    """Open HTTP connections from one client address; a further one is closed at once,
    so one address cannot take all of ``max_connections``.  0 disables; loopback is
    exempt unless ``rate_limit_loopback``; not applied with ``trust_forwarded_for``
    (every connection then comes from the proxy)."""
    rate_limit_per_second: float = 200.0
    """Sustained RPC calls per second per client address, each call of a batch counted
    (0 disables the limit)."""
    rate_limit_burst: int = 400
    """Calls a client may make at once before the sustained rate applies."""
    rate_limit_loopback: bool = False
    """Also rate-limit 127.0.0.0/8 and ::1 (off: local tests and benchmarks are trusted)."""
    rate_limit_clients: int = 100_000
    """Client addresses tracked at once; the least recently seen are forgotten first."""
    trust_forwarded_for: bool = False
    """Key the rate limit on X-Forwarded-For's last address, the one the trusted proxy in
    front of the server appended (only behind such a proxy)."""
    verify_threads: int = 0
    """1: signature checks on a worker thread, batched (for hosts with idle cores);
    0: on the event loop (on the 2-core bench machine both gave about the same calls/s)."""
    username_cache_size: int = 50_000
    """Claimed usernames whose keys are kept in memory to skip a database read per call."""

    long_poll_max_wait_ms: int = 25_000
    """Longest a ``poll`` or ``getIceCandidates`` with ``waitMs`` is held (longer asks
    are held this long); ``GET /`` advertises it.  0 turns long polling off: ``waitMs``
    is then ignored, as by the 0.5.4 server, and ``GET /`` lists no extension."""
    long_poll_max_waiting: int = 2_048
    """Calls held at once by one server process; a call past it is answered at once.
    Each holds an HTTP connection, so keep it well under ``max_connections``."""
    long_poll_max_waiting_per_user: int = 32
    """Calls one username may have held at once; a call past it is answered at once."""

    web_client: bool = True
    """Serve the browser client and the live page under ``/web/`` (static files that
    ship with the package; docs/live-page.md)."""
    public_state: bool = True
    """Answer ``GET /state``: live service names, their owners' usernames, offer counts
    and answered offers (who answered whom, when); never an SDP, a candidate or a key.
    Off hides what is published from anyone who does not know its name."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: object) -> ServerConfig:
        """Defaults, then ``RONDEVU_*`` variables, then ``overrides`` (None is ignored).

        Raises ValueError naming the variable when a value does not parse.
        """
        values: dict[str, object] = {}
        for spec in dataclasses.fields(cls):
            name = ENV_PREFIX + spec.name.upper()
            if name in environ:
                values[spec.name] = _parse(name, environ[name], spec)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def env_names(self) -> list[str]:
        """The environment variable of every setting, for docs and ``--help``."""
        return [ENV_PREFIX + spec.name.upper() for spec in dataclasses.fields(self)]


def _parse(name: str, raw: str, spec: dataclasses.Field[object]) -> object:
    kind = spec.type
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if kind == "tuple[str, ...]":
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{name}: cannot parse {raw!r} as {kind}") from None
    return raw
