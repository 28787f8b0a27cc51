"""ICE server configurations: the original client's presets and custom server lists, as pure data.

A peer connection is configured with an `IceConfiguration`: the STUN/TURN servers and the
transport policy.  The policy lives on the configuration, never inside a server entry:
the original's ``relay-only`` preset put ``iceTransportPolicy`` in its TURN entry, where
browsers ignore it, so it was not relay-only at all (B17).  Here ``relay-only`` carries
`IceTransportPolicy.RELAY` at the configuration level, and a custom server entry that tries
the original's placement is rejected with a message that says where the key belongs.

Invariants: every `IceServer` has at least one URL with a ``stun:``, ``stuns:``, ``turn:``
or ``turns:`` scheme; TURN URLs come with a username and a credential (as the WebRTC spec
requires); presets are immutable.  Drivers convert an `IceConfiguration` to their WebRTC
library's own type; an empty server list means "no servers" (host candidates only), which
a driver must pass through as such rather than substitute a default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "DEFAULT_ICE_CONFIGURATION",
    "ICE_PRESETS",
    "NO_ICE_SERVERS",
    "IceConfiguration",
    "IceServer",
    "IceTransportPolicy",
    "ice_configuration",
    "parse_ice_server",
]

_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
_SERVER_KEYS = frozenset({"urls", "username", "credential", "credentialType"})


class IceTransportPolicy(StrEnum):
    """Which candidates ICE may use (``RTCConfiguration.iceTransportPolicy``)."""

    ALL = "all"
    RELAY = "relay"


@dataclass(frozen=True, slots=True, kw_only=True)
class IceServer:
    """One STUN or TURN server entry (the shape of ``RTCIceServer``)."""

    urls: tuple[str, ...]
    """One or more ``stun:``/``stuns:``/``turn:``/``turns:`` URLs of the same server."""
    username: str | None = None
    """TURN username; required when any URL is a TURN URL."""
    credential: str | None = None
    """TURN password (credential type ``password``, the only one supported)."""

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("an ICE server needs at least one URL")
        for url in self.urls:
            if not url.startswith(_SCHEMES):
                raise ValueError(f"unsupported ICE server URL scheme: {url!r}")
        if self.is_turn and (self.username is None or self.credential is None):
            raise ValueError("a TURN server needs a username and a credential")

    @property
    def is_turn(self) -> bool:
        """True when any URL is a TURN (relay) URL."""
        return any(url.startswith(("turn:", "turns:")) for url in self.urls)


@dataclass(frozen=True, slots=True, kw_only=True)
class IceConfiguration:
    """The ICE part of a peer connection's configuration."""

    servers: tuple[IceServer, ...] = ()
    """STUN/TURN servers; empty means host candidates only."""
    transport_policy: IceTransportPolicy = IceTransportPolicy.ALL
    """`IceTransportPolicy.RELAY` allows relayed (TURN) candidates only (B17)."""

    def __post_init__(self) -> None:
        if self.transport_policy is IceTransportPolicy.RELAY and not any(
            server.is_turn for server in self.servers
        ):
            # Relay-only without a TURN server can never connect; say so up front.
            raise ValueError("the relay transport policy needs at least one TURN server")


# Exact URLs and credentials of the original's ICE_SERVER_PRESETS.
_IPV4_TURN_SERVERS = (
    IceServer(urls=("stun:57.129.61.67:3478",)),
    IceServer(
        urls=(
            "turn:57.129.61.67:3478?transport=tcp",
            "turn:57.129.61.67:3478?transport=udp",
        ),
        username="webrtcuser",
        credential="supersecretpassword",
    ),
)

ICE_PRESETS: Mapping[str, IceConfiguration] = MappingProxyType(
    {
        "ipv4-turn": IceConfiguration(servers=_IPV4_TURN_SERVERS),
        "hostname-turns": IceConfiguration(
            servers=(
                IceServer(urls=("stun:turn.share.fish:3478",)),
                IceServer(
                    urls=(
                        "turns:turn.share.fish:5349?transport=tcp",
                        "turns:turn.share.fish:5349?transport=udp",
                        "turn:turn.share.fish:3478?transport=tcp",
                        "turn:turn.share.fish:3478?transport=udp",
                    ),
                    username="webrtcuser",
                    credential="supersecretpassword",
                ),
            )
        ),
        "google-stun": IceConfiguration(
            servers=(
                IceServer(urls=("stun:stun.l.google.com:19302",)),
                IceServer(urls=("stun:stun1.l.google.com:19302",)),
            )
        ),
        # B17: the policy sits on the configuration, so relay-only really is.
        "relay-only": IceConfiguration(
            servers=_IPV4_TURN_SERVERS, transport_policy=IceTransportPolicy.RELAY
        ),
    }
)
"""The four named presets of the original client (``relay-only`` fixed per B17)."""

DEFAULT_ICE_CONFIGURATION = IceConfiguration(
    servers=(IceServer(urls=("stun:stun.l.google.com:19302",)),)
)
"""The client's default when no ``iceServers`` option is given, as the original's: one
Google STUN."""

NO_ICE_SERVERS = IceConfiguration()
"""No STUN/TURN at all: host candidates only (loopback tests, LAN use)."""


def parse_ice_server(entry: Mapping[str, object]) -> IceServer:
    """Build an `IceServer` from an ``RTCIceServer``-shaped mapping.

    Accepts ``urls`` (a string or a non-empty list of strings), ``username``,
    ``credential`` and ``credentialType`` (``"password"`` only).  Any other key raises
    `ValueError`; ``iceTransportPolicy`` gets a message saying it belongs to the
    configuration (B17).
    """
    unknown = sorted(set(entry) - _SERVER_KEYS)
    if "iceTransportPolicy" in unknown:
        raise ValueError(
            "iceTransportPolicy belongs to the ICE configuration, not to a server entry "
            "(pass transport_policy instead)"
        )
    if unknown:
        raise ValueError(f"unknown ICE server keys: {', '.join(unknown)}")
    urls = entry.get("urls")
    if isinstance(urls, str):
        url_tuple: tuple[str, ...] = (urls,)
    elif isinstance(urls, list | tuple) and all(isinstance(u, str) for u in urls):
        url_tuple = tuple(str(u) for u in urls)
    else:
        raise ValueError("ICE server urls must be a string or a list of strings")
    if entry.get("credentialType", "password") != "password":
        raise ValueError("only the 'password' TURN credential type is supported")
    username = entry.get("username")
    credential = entry.get("credential")
    if username is not None and not isinstance(username, str):
        raise ValueError("ICE server username must be a string")
    if credential is not None and not isinstance(credential, str):
        raise ValueError("ICE server credential must be a string")
    return IceServer(urls=url_tuple, username=username, credential=credential)


def ice_configuration(
    spec: str | Sequence[IceServer | Mapping[str, object]] | None = None,
    *,
    transport_policy: IceTransportPolicy | None = None,
) -> IceConfiguration:
    """Resolve the client's ``iceServers`` option to an `IceConfiguration`.

    ``spec`` is a preset name, a list of servers (`IceServer` or ``RTCIceServer``-shaped
    mappings; an empty list means no servers), or None for the client's default.
    ``transport_policy`` overrides the policy (a preset's or the default ALL).
    Raises `ValueError` for an unknown preset or a malformed entry.
    """
    if spec is None:
        base = DEFAULT_ICE_CONFIGURATION
    elif isinstance(spec, str):
        if spec not in ICE_PRESETS:
            raise ValueError(
                f"unknown ICE preset {spec!r}; known presets: {', '.join(sorted(ICE_PRESETS))}"
            )
        base = ICE_PRESETS[spec]
    else:
        servers = tuple(s if isinstance(s, IceServer) else parse_ice_server(s) for s in spec)
        base = IceConfiguration(servers=servers)
    if transport_policy is None or transport_policy is base.transport_policy:
        return base
    return IceConfiguration(servers=base.servers, transport_policy=transport_policy)
