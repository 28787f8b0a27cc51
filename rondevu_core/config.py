"""Configuration of the connection and offer-pool machines.

`ConnectionConfig` carries the 0.18.9 ``DEFAULT_CONNECTION_CONFIG`` values under Python
names (milliseconds everywhere) plus the few knobs our machines add: the ICE
configuration handed to `CreatePeerConnection`, the data channel's label and options
(`DataChannelOptions`, handed to `CreateDataChannel`), and how the ICE
cursor advances (`strict_ice_timestamps`).  The 0.18.9 ``debug`` flag has no counterpart:
the core does not log, drivers do.

`PoolConfig` describes one published service (the ``publishService`` options).

Both are frozen; validation happens in ``__post_init__`` so a bad value fails where it is
written, not deep inside a transition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rondevu_core.delivery.config import DEFAULT_SESSION, SessionConfig
from rondevu_core.rules.backoff import BackoffPolicy
from rondevu_core.rules.fqn import ServiceFqn
from rondevu_core.rules.ice import DEFAULT_ICE_CONFIGURATION, IceConfiguration

__all__ = ["ConnectionConfig", "DataChannelOptions", "PoolConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DataChannelOptions:
    """Reliability of the data channel an offerer creates (the 0.18.9 offer factory's job).

    The answerer takes whatever the offerer's channel announces."""

    ordered: bool = True
    """Deliver in send order (False: as they arrive)."""
    max_retransmits: int | None = None
    """Give a message up after this many retransmissions (None: fully reliable)."""
    max_packet_life_time: int | None = None
    """Give a message up after this many ms (None: fully reliable)."""
    protocol: str = ""
    """The sub-protocol name announced with the channel."""

    def __post_init__(self) -> None:
        if self.max_retransmits is not None and self.max_packet_life_time is not None:
            raise ValueError("max_retransmits and max_packet_life_time exclude each other")
        for name in ("max_retransmits", "max_packet_life_time"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ValueError(f"{name} must be 0 to 65535")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionConfig:
    """How one durable connection behaves; the defaults are those of client 0.18.9.

    Times are in milliseconds: the connection timeout (30 s), reconnection (5 attempts,
    0: unlimited, with a doubling backoff), the buffer of messages sent while not
    connected (100 messages, 60 s), the close linger (2 s), ICE candidate polling.
    Pass it as ``Rondevu.connect(connection_config=...)`` or per call.  Raises
    `ValueError` for a negative time or size.
    """

    connection_timeout_ms: int = 30000
    """From the start of an attempt until CONNECTED; on expiry the attempt fails."""
    handshake_timeout_ms: int = 8000
    """From the moment both sides hold the answer (the answerer's answerOffer succeeded;
    the offerer applied it) until CONNECTED; on expiry the attempt fails.  Much shorter
    than the connection timeout, which also covers fetching the offer: an offer whose
    owner is gone (killed, or its server restarted) fails in seconds, and the next
    attempt fetches a fresh one.  0 disables it (ours; 0.18.9 has only the 30 s bound)."""
    ice_gathering_timeout_ms: int = 10000
    """Reported as ``ice:gathering:timeout`` when gathering has not completed by then."""
    reconnect_enabled: bool = True
    """Reconnect after a lost or failed link (False: the first loss is final)."""
    max_reconnect_attempts: int = 5
    """0 means unlimited."""
    reconnect_backoff_base_ms: int = 1000
    """Delay before the first reconnection attempt; each next one doubles it."""
    reconnect_backoff_max_ms: int = 30000
    """Longest delay between attempts."""
    reconnect_probe_interval_ms: int = 0
    """Ours, off by default: while a reconnection waits longer than this, look the
    service up (one getService) this often, and attempt at once when it answers with
    an offer, so a link restored during a long backoff is used within this interval
    rather than after the rest of the delay.  0: wait out every delay."""
    reconnect_jitter: float = 0.1
    """Each delay varies by up to this fraction, so peers do not retry in lockstep."""
    buffer_enabled: bool = True
    """Keep messages sent while not connected and replay them on (re)connection."""
    max_buffer_size: int = 100
    """Messages kept; when full the oldest is dropped (``message:buffer:overflow``)."""
    max_buffer_age_ms: int = 60000
    """Older buffered messages are dropped (``message:buffer:expired``)."""
    preserve_buffer_on_close: bool = False
    """When True the ``closed`` event hands back the unsent messages; otherwise they are dropped."""
    close_linger_ms: int = 2000
    """On an application close of an open channel, how long the driver may wait for the
    messages already handed to the channel to be sent and acknowledged before it tears
    the peer connection down (WebRTC's close aborts the association and drops them, so
    ``send(); close()`` would lose the last words).  0 closes at once."""
    ice_polling_interval_ms: int = 500
    ice_polling_timeout_ms: int = 30000
    """Remote-candidate polling gives up this long after it started."""
    ice: IceConfiguration = DEFAULT_ICE_CONFIGURATION
    """STUN/TURN servers and transport policy for every peer connection (B17)."""
    data_channel_label: str = "default"
    """The label of the data channel the offerer creates."""
    data_channel: DataChannelOptions = DataChannelOptions()
    """The reliability options of the data channel the offerer creates."""
    session: SessionConfig | None = DEFAULT_SESSION
    """The session layer (docs/session-layer.md), used when the peer speaks it too:
    exactly-once delivery across reconnections and a heartbeat that notices a silent
    peer within ``heartbeat_timeout_ms``.  None: never offer or accept it (plain
    messages only, as with a peer that does not speak it)."""
    strict_ice_timestamps: bool = False
    """True when the server keeps candidate ``createdAt`` strictly increasing per offer
    (ours does): the cursor then advances to the largest ``createdAt`` seen.  False (the
    safe default for server 0.5.4, whose timestamps collide: B5) polls with ``since=0``
    and relies on de-duplication alone (§9)."""
    long_poll_wait_ms: int = 0
    """How long the server may hold a ``poll`` or ``getIceCandidates`` (its ``waitMs``,
    docs/long-polling.md); 0, the default, polls as the original does (server 0.5.4).
    The client sets it from the server's advertised limit
    (`rondevu_core.rules.server_info.long_poll_wait_ms`); a server that holds calls is ours,
    so it also implies strictly increasing candidate timestamps."""

    def __post_init__(self) -> None:
        for name in (
            "connection_timeout_ms",
            "handshake_timeout_ms",
            "ice_gathering_timeout_ms",
            "max_buffer_size",
            "max_buffer_age_ms",
            "ice_polling_timeout_ms",
            "close_linger_ms",
            "long_poll_wait_ms",
            "reconnect_probe_interval_ms",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.ice_polling_interval_ms <= 0:
            raise ValueError("ice_polling_interval_ms must be > 0")
        # BackoffPolicy validates the reconnection fields.
        self.backoff_policy()

    def backoff_policy(self) -> BackoffPolicy:
        """The reconnection spacing as a `BackoffPolicy`."""
        return BackoffPolicy(
            base_ms=self.reconnect_backoff_base_ms,
            max_ms=self.reconnect_backoff_max_ms,
            jitter=self.reconnect_jitter,
            max_attempts=self.max_reconnect_attempts,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    """One published service: ``service`` must name its owner (``chat:1.0.0@alice``)."""

    service: ServiceFqn
    max_offers: int = 1
    ttl_ms: int = 300000
    """Sent as ``ttl`` with every publishService (the 0.18.9 default)."""
    poll_interval_ms: int = 1000
    """Spacing of the single-flight ``poll`` loop that collects answers."""
    refresh_margin_ms: int = 30000
    """Republish this long before the offers expire, so discovery never finds nothing."""
    look_interval_ms: int | None = None
    """How often the pool looks its own service up to notice offers the server lost
    (docs/recovery.md).  None: with every plain poll, every 60 s while polls are held
    (and at once when a poll succeeds after failing); 0: never, so offers lost by the
    server stay lost until the next refresh."""
    connection: ConnectionConfig = field(default_factory=ConnectionConfig)

    def __post_init__(self) -> None:
        if self.service.username is None or self.service.username == "":
            raise ValueError("PoolConfig.service must include the owner's username")
        if not 1 <= self.max_offers <= 100:
            # 100 is the server's per-publish limit (§7.2), and the pool publishes in one call.
            raise ValueError("max_offers must be within [1, 100]")
        if self.look_interval_ms is not None and self.look_interval_ms < 0:
            raise ValueError("look_interval_ms must be >= 0 (0: never look)")
        if self.ttl_ms <= 0 or self.poll_interval_ms <= 0 or self.refresh_margin_ms < 0:
            raise ValueError("ttl_ms and poll_interval_ms must be > 0, refresh_margin_ms >= 0")
