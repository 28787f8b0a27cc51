"""`IceConfiguration` (rondevu_core.rules.ice) to aiortc's `RTCConfiguration`.

Two aiortc behaviours shape this conversion:
- ``RTCConfiguration(iceServers=None)`` makes aiortc add ``stun:stun.l.google.com:19302``
  behind the caller's back, and every gathering may then stall for about 5 s without
  network.  The server list is therefore always passed as a list, empty when the
  configuration has no servers, so the silent default never applies.
- aiortc (through aioice) uses only the first STUN URL and the first TURN URL it can
  handle (``turn:`` over udp/tcp, ``turns:`` over tcp); other URLs are ignored.  A URL it
  cannot parse raises `ValueError` here, at configuration time, not later during
  gathering.

The relay transport policy (B17) is enforced by aiortc (verified with 1.16) through
``RTCConfiguration.iceTransportPolicy``: with it aioice gathers no host or server-reflexive
candidates.  An aiortc without that field cannot enforce it, so the conversion raises
rather than silently allow direct connections.
"""

from __future__ import annotations

import dataclasses

from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcicetransport import connection_kwargs

from rondevu_core.rules.ice import IceConfiguration, IceTransportPolicy

__all__ = ["rtc_configuration"]


def rtc_configuration(config: IceConfiguration) -> RTCConfiguration:
    """Build aiortc's configuration for ``config``; raise `ValueError` if unsupported."""
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in config.servers
    ]
    # What aioice will actually use; also validates every URL now (ValueError).
    usable = connection_kwargs(servers)
    if config.transport_policy is not IceTransportPolicy.RELAY:
        return RTCConfiguration(iceServers=servers)
    fields = {f.name for f in dataclasses.fields(RTCConfiguration)}
    if "iceTransportPolicy" not in fields:
        raise ValueError(
            "this aiortc cannot enforce the relay transport policy "
            "(RTCConfiguration has no iceTransportPolicy); upgrade aiortc"
        )
    if "turn_server" not in usable:
        raise ValueError(
            "the relay transport policy needs a TURN URL aiortc can use "
            "(turn: over udp or tcp, or turns: over tcp)"
        )
    # Imported only here: an aiortc without the policy field lacks this enum too.
    from aiortc.rtcconfiguration import RTCIceTransportPolicy

    return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)
