"""Restrict one peer connection's host candidates to chosen local addresses.

Why this exists: aioice gathers host candidates from every interface address
(``aioice.ice.get_host_addresses``) and deliberately leaves out ``127.0.0.1`` and ``::1``,
so two aiortc peers cannot be confined to loopback through any public option (aioice's
``Connection`` only has ``use_ipv4``/``use_ipv6``, and aiortc does not expose even those).

How: instead of patching ``get_host_addresses`` for the whole process, the
``gather_candidates`` method of *this peer connection's own* aioice ``Connection`` objects
is replaced by an instance attribute that gathers from the given addresses only, through
aioice's public ``get_component_candidates(component, addresses)``.  Nothing global
changes, so other peer connections (even concurrent ones) are unaffected.

Cost: the replacement mirrors aioice 0.13's ``gather_candidates`` and reaches four private
attributes (``RTCIceGatherer._connection``; ``Connection._components``,
``_local_candidates``, ``_local_candidates_start``/``_end``).  If a future aioice renames
them, `restrict_host_addresses` raises instead of silently gathering from every address,
and `check_host_candidates` (run by the driver on every local SDP) refuses any host
candidate outside the allowed set.  Limits: applies to the ICE transports that exist when
it is called (the driver calls it right before each setLocalDescription); the relay
transport policy gathers no host candidates at all, so the two options are exclusive.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from aiortc import RTCPeerConnection

from rondevu_core.rules.sdp import candidates_from_sdp

__all__ = ["check_host_candidates", "normalise_host_addresses", "restrict_host_addresses"]

_MARK = "_rondevu_host_addresses"
_PRIVATE = ("_components", "_local_candidates", "_local_candidates_start")


def normalise_host_addresses(addresses: Sequence[str]) -> tuple[str, ...]:
    """Validate IP literals (no hostnames, no duplicates); raise `ValueError`."""
    if isinstance(addresses, str):
        raise ValueError("host_addresses must be a list of IP addresses, not a string")
    parsed = tuple(str(ipaddress.ip_address(a)) for a in addresses)
    if not parsed:
        raise ValueError("host_addresses must not be empty")
    if len(set(parsed)) != len(parsed):
        raise ValueError("host_addresses has duplicates")
    return parsed


def _ice_connections(pc: RTCPeerConnection) -> list[Any]:
    transports = [pc.sctp.transport] if pc.sctp is not None else []
    transports += [t.receiver.transport for t in pc.getTransceivers()]
    return [dtls.transport.iceGatherer._connection for dtls in transports]


def restrict_host_addresses(pc: RTCPeerConnection, addresses: tuple[str, ...]) -> None:
    """Make ``pc``'s existing ICE transports gather host candidates on ``addresses`` only.

    Idempotent per transport.  Raises `RuntimeError` if aioice's internals are not the
    ones this was written against, or if a transport already started gathering.
    """
    for connection in _ice_connections(pc):
        if getattr(connection, _MARK, None) is not None:
            continue
        if not all(hasattr(connection, name) for name in _PRIVATE):
            raise RuntimeError("host_addresses is not supported with this aioice version")
        if connection._local_candidates_start:
            raise RuntimeError("host_addresses must be applied before gathering starts")

        async def gather_candidates(connection: Any = connection) -> None:
            # Mirrors aioice's Connection.gather_candidates with the address list fixed.
            if connection._local_candidates_start:
                return
            connection._local_candidates_start = True
            for component in sorted(connection._components):
                connection._local_candidates += await connection.get_component_candidates(
                    component=component, addresses=list(addresses)
                )
            connection._local_candidates_end = True

        connection.gather_candidates = gather_candidates
        setattr(connection, _MARK, addresses)


def check_host_candidates(sdp: str, addresses: tuple[str, ...]) -> None:
    """Raise `RuntimeError` if ``sdp`` has a host candidate outside ``addresses``."""
    allowed = {ipaddress.ip_address(a) for a in addresses}
    for wire in candidates_from_sdp(sdp):
        candidate = wire.parsed()
        if candidate.type != "host":
            continue
        try:
            address = ipaddress.ip_address(candidate.address)
        except ValueError:
            address = None
        if address not in allowed:
            raise RuntimeError(f"host candidate outside host_addresses: {candidate.address}")
