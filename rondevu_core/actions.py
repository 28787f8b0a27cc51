"""Everything a machine asks its driver to do.

Actions are frozen, keyword-only dataclasses deriving from `Action`, drained with
``machine.next_action()`` in the order they were queued.  A driver performs each one and
reports back with inputs (`rondevu_core.inputs`):

- `SendRpc` → perform the call (sign it with `rondevu_core.rpc.envelope`, batch it as
  you like) and feed `RpcResult` with the same ``call_id``.  Every call is answered
  exactly once, success or failure, unless the machine cancels it; machines never see
  keys.
- `CancelRpc` → the machine no longer wants that call's outcome (a held poll it must
  stop waiting on): drop it if it has not gone out, abandon its request if the server
  holds it, and never feed its `RpcResult`.
- Peer-connection actions name a ``pc_id`` chosen by the machine in
  `CreatePeerConnection`.  They map one to one onto ``RTCPeerConnection`` in browsers
  and in aiortc:

  ================================  ==================================================
  `CreatePeerConnection`            ``new RTCPeerConnection({iceServers, iceTransportPolicy})``;
                                    attach every handler *now*, before any description
                                    is set, so no early candidate is lost (B3)
  `CreateDataChannel`               ``pc.createDataChannel(label)``
  `CreateOffer` / `CreateAnswer`    ``createOffer()``/``createAnswer()`` then
                                    ``setLocalDescription``; report `LocalDescriptionReady`
  `SetRemoteDescription`            report `RemoteDescriptionSet` (or `PeerError`)
  `AddRemoteCandidate`              ``pc.addIceCandidate(candidate)``
  `SendData`                        ``dc.send(data)``
  `ClosePeerConnection`             ``dc.close(); pc.close()``; later reports about this
                                    pc are ignored
  ================================  ==================================================

Deadlines are not actions: after handling inputs a driver asks ``get_timer()`` and calls
``handle_timer(now)`` when it is due, so a deadline can never go stale in a queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rondevu_core.buffer import Payload
from rondevu_core.config import DataChannelOptions
from rondevu_core.rpc import RpcRequest
from rondevu_core.rules.ice import IceConfiguration

__all__ = [
    "Action",
    "AddRemoteCandidate",
    "CancelRpc",
    "ClosePeerConnection",
    "CreateAnswer",
    "CreateDataChannel",
    "CreateOffer",
    "CreatePeerConnection",
    "PeerAction",
    "SendData",
    "SendRpc",
    "SetRemoteDescription",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """Base of every action."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRpc(Action):
    """Perform ``request`` and answer with ``RpcResult(call_id=call_id, …)``."""

    call_id: int
    request: RpcRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRpc(Action):
    """Forget call ``call_id``: no `RpcResult` for it may be fed afterwards.

    Only ever asked for calls the server may hold (``Urgency.HELD``), which read and
    change nothing, so abandoning one mid-flight loses nothing: the next read sees the
    same data.  Closing its HTTP request also tells the server to stop holding it."""

    call_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAction(Action):
    """Base of the actions on one peer connection."""

    pc_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatePeerConnection(PeerAction):
    """Create a peer connection with this ICE configuration and attach all handlers."""

    ice: IceConfiguration


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateDataChannel(PeerAction):
    """Offerer: create the data channel before the offer so the SDP negotiates it."""

    label: str
    options: DataChannelOptions
    """Its reliability: what `ConnectionConfig.data_channel` says."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateOffer(PeerAction):
    """``createOffer`` + ``setLocalDescription``; report `LocalDescriptionReady`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateAnswer(PeerAction):
    """``createAnswer`` + ``setLocalDescription``; report `LocalDescriptionReady`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SetRemoteDescription(PeerAction):
    """Apply the peer's description; report `RemoteDescriptionSet`."""

    type: Literal["offer", "answer"]
    sdp: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AddRemoteCandidate(PeerAction):
    """Add one remote candidate (only ever after the remote description is set)."""

    candidate: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class SendData(PeerAction):
    """Send one message on the data channel (only ever while it is open)."""

    data: Payload
    channel: int = 0
    """The channel, by the name the driver gave it in its reports (`ChannelInput`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClosePeerConnection(PeerAction):
    """Close the data channel and the peer connection; nothing else is asked of this pc."""

    linger_ms: int = 0
    """First wait up to this long for the messages already sent on the channel to leave
    (an application close: nothing it sent is cut off); 0 closes at once."""
