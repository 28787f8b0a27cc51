"""Helpers for the session-layer tests with real aiortc peers: cutting a link under a
peer connection without telling it, the way a dead network or a vanished peer does."""

from __future__ import annotations

from typing import Any


def blackhole(pc: Any) -> int:
    """Make every UDP socket of aiortc peer connection ``pc`` drop what it sends.

    Nothing is closed and no state changes: the peer keeps believing the link is up
    (aiortc would notice only after ~30 s of failed consent checks), as with a pulled
    cable.  Returns how many sockets were silenced (0 means the internals moved and
    the caller's test should fail loudly rather than pass without a cut).
    """
    silenced = 0
    sctp = getattr(pc, "sctp", None)
    dtls = getattr(sctp, "transport", None)
    ice = getattr(dtls, "transport", None)
    connection = getattr(ice, "_connection", None)
    for protocol in getattr(connection, "_protocols", ()):
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.sendto = _drop
            silenced += 1
    return silenced


def _drop(*_args: Any, **_kwargs: Any) -> None:
    return None
