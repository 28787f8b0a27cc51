"""How two ends agree to use the session layer: one session-level SDP attribute.

The offer carries ``a=x-rondevu-session:1 <epoch>`` (the offering process's epoch: a
new process draws a new one), the answer ``a=x-rondevu-session:1 <session-id>`` (chosen
by the answering side once and kept across its reconnections).  An answer carries it
only when the offer did, so both sides know before the data channel opens whether the
layer is on, and a peer that does not speak it (the TypeScript client, a browser page)
ignores an unknown attribute and sees only plain messages.  Why SDP and not a hello on
the channel: see docs/session-layer.md.

Only text that looks like SDP (it has an ``m=`` line) is touched: the attribute goes
right before the first media section, where session-level attributes end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ATTRIBUTE",
    "SessionOffer",
    "add_session_attribute",
    "looks_like_sdp",
    "read_session_attribute",
    "remote_max_message_size",
]

ATTRIBUTE = "x-rondevu-session"
VERSION = 1
_TOKEN = re.compile(r"[0-9A-Za-z_-]{1,64}")
_LINE = re.compile(rf"^a={ATTRIBUTE}:(\d+) (\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionOffer:
    """What a description says about the layer: its version and the id it carries."""

    version: int
    token: str


def add_session_attribute(sdp: str, token: str) -> str:
    """``sdp`` with the session attribute carrying ``token`` (unchanged if not SDP)."""
    if not _TOKEN.fullmatch(token):
        raise ValueError("session token must be 1-64 characters of [0-9A-Za-z_-]")
    newline = "\r\n" if "\r\n" in sdp else "\n"
    marker = f"{newline}m="
    at = sdp.find(marker)
    if at < 0:
        return sdp
    line = f"{newline}a={ATTRIBUTE}:{VERSION} {token}"
    return sdp[:at] + line + sdp[at:]


def read_session_attribute(sdp: str) -> SessionOffer | None:
    """The session attribute of a remote description, or None when absent or unusable.

    Only the session-level part (before the first ``m=``) is read; a version this code
    does not speak, or a malformed token, count as absent: the link stays plain.
    """
    head = re.split(r"\r?\nm=", sdp, maxsplit=1)[0]
    match = _LINE.search(head)
    if match is None:
        return None
    version, token = int(match.group(1)), match.group(2)
    if version != VERSION or not _TOKEN.fullmatch(token):
        return None
    return SessionOffer(version=version, token=token)


def looks_like_sdp(sdp: str) -> bool:
    """True for a description with a media section (the only kind we annotate)."""
    return sdp.startswith("m=") or "\nm=" in sdp


_MAX_MESSAGE_SIZE = re.compile(r"^a=max-message-size:(\d{1,12})\s*$", re.MULTILINE)
DEFAULT_MAX_MESSAGE_SIZE = 65536
"""What a peer accepts when its description announces nothing (RFC 8841: 64 KiB)."""


def remote_max_message_size(sdp: str) -> int | None:
    """The largest data-channel message the peer of ``sdp`` accepts: its
    ``a=max-message-size``, 64 KiB when absent, None when it announces 0 (no limit)."""
    match = _MAX_MESSAGE_SIZE.search(sdp)
    if match is None:
        return DEFAULT_MAX_MESSAGE_SIZE
    size = int(match.group(1))
    return None if size == 0 else size
