"""The session layer: exactly-once, in-order messages across reconnections.

- `frames`: the wire format of the two frame kinds (DATA and ACK);
- `negotiation`: the SDP attribute both ends use to agree on the layer;
- `config`: `SessionConfig`;
- `machine`: `DeliverySession`, the sans-IO machine of one session (both directions).

`rondevu_core.connection.Connection` runs one `DeliverySession` per session and feeds it
the data channel of each peer connection; docs/session-layer.md describes the protocol.
"""

from rondevu_core.delivery.config import SessionConfig
from rondevu_core.delivery.machine import DeliverySession, Unacked, WindowFullError

__all__ = ["DeliverySession", "SessionConfig", "Unacked", "WindowFullError"]
