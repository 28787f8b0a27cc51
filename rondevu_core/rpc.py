"""RPC calls as the core sees them, and the signed envelope they travel in (§3, §4).

The core never performs a call: a state machine emits an `RpcRequest` inside an action,
and the driver feeds back an `RpcOutcome` (`RpcOk` or `RpcFailed`) for it.  `envelope`
turns a request into the JSON object of docs/protocol.md §3, signed as §4 prescribes; it is
pure because the caller passes the key pair and ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rondevu_core.rules.signing import KeyPair, build_message, expected_context

__all__ = ["Method", "RpcFailed", "RpcOk", "RpcOutcome", "RpcRequest", "Urgency", "envelope"]


class Method(StrEnum):
    """The nine RPC methods of server 0.5.4 (§7)."""

    GET_USER = "getUser"
    PUBLISH_SERVICE = "publishService"
    GET_SERVICE = "getService"
    DELETE_SERVICE = "deleteService"
    ANSWER_OFFER = "answerOffer"
    GET_OFFER_ANSWER = "getOfferAnswer"
    POLL = "poll"
    ADD_ICE_CANDIDATES = "addIceCandidates"
    GET_ICE_CANDIDATES = "getIceCandidates"


class Urgency(StrEnum):
    """How a call may be grouped with others (`rondevu_core.batcher`).

    Chosen by the machine that issues the call, since only it knows whether a handshake
    waits on the reply; the batcher only applies it.  It never reaches the wire.
    """

    CAN_WAIT = "can_wait"
    """May wait in the queue up to the batcher's ``max_wait_ms`` for companions (the
    0.18.9 rule for every call): refreshes, deletions, plain polls."""
    URGENT = "urgent"
    """On the critical path of a handshake: leaves at once, with whatever is queued,
    when no other request is in flight (a request in flight is the only reason to wait:
    companions may gather until it returns, at most ``max_wait_ms``)."""
    HELD = "held"
    """May be held by the server (a long poll, docs/long-polling.md): always goes alone
    in its own request, at once, so it never holds up another call.  It does not count
    as a request in flight for `URGENT` calls."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcRequest:
    """One call: the method and its JSON params (already in wire shape, camelCase keys),
    and how urgently it must leave (client-side only, not sent)."""

    method: Method
    params: Mapping[str, Any] = field(default_factory=dict)
    urgency: Urgency = Urgency.CAN_WAIT


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcOk:
    """The server answered ``{"success": true, "result": …}``."""

    result: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcFailed:
    """The call failed: the server's ``error`` text, or a transport failure's description.

    ``transport`` is True when no server answer exists for this call (HTTP error, network
    failure, malformed reply), False when the server itself reported the error.
    """

    error: str
    transport: bool = False


RpcOutcome = RpcOk | RpcFailed


def envelope(
    request: RpcRequest, *, username: str, keypair: KeyPair, now_ms: int
) -> dict[str, Any]:
    """The signed call object of §3 for ``request``, as the 0.18.9 client builds it.

    Every method except ``getUser`` carries ``publicKey`` so the server can auto-claim the
    username (§4, §5).
    """
    context = expected_context(request.method.value, request.params)
    message = build_message(request.method.value, username, context, now_ms)
    body: dict[str, Any] = {
        "method": request.method.value,
        "message": message,
        "signature": keypair.sign(message),
    }
    if request.method is not Method.GET_USER:
        body["publicKey"] = keypair.public_key
    body["params"] = dict(request.params)
    return body
