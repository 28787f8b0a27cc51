"""The aiortc peer driver: WebRTC peer connections as operations in, events out.

`AiortcPeer` wraps one aiortc ``RTCPeerConnection``.  Its operations (create a data
channel, create an offer, accept an offer, set an answer, add a trickled candidate, send,
close) each perform one step the sans-IO core asks for; its events (`PeerEvent`
subclasses, frozen dataclasses) report what happened, through a callback.  No protocol
decision is made here.

Modules:
- `_peer`: `AiortcPeer` and its two local-misuse errors.
- `_events`: the events.
- `_config`: `IceConfiguration` (rondevu_core.rules.ice presets) to ``RTCConfiguration``,
  with the relay policy enforced (B17) and aiortc's hidden default STUN server avoided.
- `_hosts`: the opt-in ``host_addresses`` restriction (loopback-only peers).
"""

from rondevu_aiortc._config import rtc_configuration
from rondevu_aiortc._events import (
    ConnectionStateChanged,
    DataChannelAnnounced,
    DataChannelClosed,
    DataChannelError,
    DataChannelInfo,
    DataChannelMessage,
    DataChannelOpened,
    IceConnectionStateChanged,
    IceGatheringStateChanged,
    LocalDescriptionReady,
    PeerEvent,
    RemoteInputRejected,
)
from rondevu_aiortc._peer import AiortcPeer, EventCallback, PeerClosedError, PeerStateError

__all__ = [
    "AiortcPeer",
    "ConnectionStateChanged",
    "DataChannelAnnounced",
    "DataChannelClosed",
    "DataChannelError",
    "DataChannelInfo",
    "DataChannelMessage",
    "DataChannelOpened",
    "EventCallback",
    "IceConnectionStateChanged",
    "IceGatheringStateChanged",
    "LocalDescriptionReady",
    "PeerClosedError",
    "PeerEvent",
    "PeerStateError",
    "RemoteInputRejected",
    "rtc_configuration",
]
