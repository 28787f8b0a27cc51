"""The protocol's pure rules: functions and small value types, no state machine.

Each module answers one question the wire protocol (docs/protocol.md) asks, and both halves
use them: the client's machines and drivers, and the server.

- `fqn`, `usernames`, `offer_id`, `signing`: names, ids and the signed message (§4-§7).
- `sdp`, `ice`: ICE candidates in SDP and on the wire (§9), ICE server presets.
- `replies`, `server_info`: what the client reads of the server's results and ``GET /``.
- `error_kinds`, `backoff`, `republish`: which failures to retry, how long to wait, when a
  publisher must publish again.
- `server_params`: the checks only a server applies to a call's parameters.
"""
