"""The aiortc peer driver: WebRTC peer connections as operations in, core inputs out.

`AiortcPeer` wraps one aiortc ``RTCPeerConnection``.  Its operations (create a data
channel, create an offer, accept an offer, set an answer, add a trickled candidate, send,
close) each perform one step the sans-IO core asks for; what happens is reported in the
core's own vocabulary - the peer inputs of `rondevu_core.inputs` (`ChannelOpen`,
`LocalDescriptionReady`, ...), stamped with the peer's ``pc_id`` and its clock's
``now`` - through a callback, so a runtime hands them to the machine as they are.  No
protocol decision is made here.

Modules:
- `_peer`: `AiortcPeer` and its two local-misuse errors.
- `_config`: `IceConfiguration` (rondevu_core.rules.ice presets) to ``RTCConfiguration``,
  with the relay policy enforced (B17) and aiortc's hidden default STUN server avoided.
- `_hosts`: the opt-in ``host_addresses`` restriction (loopback-only peers).
"""

from rondevu_aiortc._config import rtc_configuration
from rondevu_aiortc._peer import (
    AiortcPeer,
    InputCallback,
    PeerClosedError,
    PeerStateError,
    monotonic_ms,
)

__all__ = [
    "AiortcPeer",
    "InputCallback",
    "PeerClosedError",
    "PeerStateError",
    "monotonic_ms",
    "rtc_configuration",
]
