"""Offer ids (docs/protocol.md §7.2): lowercase hex SHA-256 of the compact JSON ``{"sdp":…}``.

The JSON is built as JavaScript's ``JSON.stringify`` builds it - control characters
escaped, non-ASCII left as is - so an id computed here equals the original server's.
The only divergence is a lone UTF-16 surrogate, which JSON.stringify escapes and Python
cannot encode to UTF-8 at all; we escape it the same way so hashing never fails.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["offer_id_for_sdp"]


def offer_id_for_sdp(sdp: str) -> str:
    """The 64-hex-digit id the 0.5.4 server gives an offer with this SDP."""
    payload = json.dumps({"sdp": sdp}, separators=(",", ":"), ensure_ascii=False)
    data = payload.encode("utf-8", "backslashreplace")
    return hashlib.sha256(data).hexdigest()
