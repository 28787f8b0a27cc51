"""`RondevuAPI`: the low-level API, one typed async method per RPC of server 0.5.4 (§7).

Each method builds the params the 0.18.9 client sends (same keys, same order), makes one
signed call through an `RpcClient` (batched unless disabled), and returns the result
parsed by its `rondevu_schemas` model.  A failed call raises on that call only:
`RpcError` (the server's text), `TransportError` (no usable answer) or `ProtocolError`
(a success reply whose result has the wrong shape).  No client-side validation: the
server is the judge of params, as with the original, so its error texts reach the caller.

Use it as ``async with RondevuAPI(transport) as api:``; leaving the block (or `aclose`)
fails what is still pending with `ClientClosedError` and leaves no task behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import pydantic

from rondevu.errors import ProtocolError, RpcError, TransportError
from rondevu.rpc_client import RpcClient, loop_clock_ms, wall_clock_ms
from rondevu.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    HttpTransport,
    SignalingTransport,
)
from rondevu_core.batcher import BatcherOptions
from rondevu_core.rpc import Method, RpcFailed, RpcRequest
from rondevu_core.rules.signing import KeyPair
from rondevu_core.rules.usernames import generate_anonymous_username
from rondevu_schemas import (
    AddIceCandidatesResult,
    GetIceCandidatesResult,
    GetOfferAnswerResult,
    GetServiceResult,
    GetUserResult,
    PollResult,
    PublishServiceResult,
    ServiceEntry,
    ServicePage,
    WireModel,
    WireRootModel,
)

__all__ = ["NOT_YET_ANSWERED", "IceCandidate", "RondevuAPI"]

log = logging.getLogger("rondevu.api")

NOT_YET_ANSWERED = "not yet answered"
"""The substring of the server's error that `RondevuAPI.get_offer_answer` maps to None,
as the original client does (§3)."""

IceCandidate = dict[str, Any] | list[Any]
"""An ICE candidate as relayed: opaque JSON (the 0.18.9 client sends
``{"candidate": "candidate:…", "sdpMLineIndex": 0, "sdpMid": "0"}``)."""

_M = TypeVar("_M", bound=WireModel | WireRootModel[Any])


class RondevuAPI:
    """Every RPC of the 0.5.4 protocol as a typed async method, as one identity.

    ``username`` and ``keypair`` default to a fresh ``anon-…`` name and a new Ed25519
    key, as ``Rondevu.connect`` does; the server claims the name on first use.
    ``batching``, ``wall_clock`` and ``clock`` are `RpcClient`'s.  Use it in ``async
    with``.

    Every call raises `RpcError` when the server refuses it (``str(error)`` is the
    server's text), `TransportError` when no usable reply comes back, `ProtocolError`
    when the reply has the wrong shape, and `ClientClosedError` when the API is closed
    before the reply; the protocol's methods are described in docs/protocol.md.
    """

    def __init__(
        self,
        transport: SignalingTransport,
        *,
        username: str | None = None,
        keypair: KeyPair | None = None,
        batching: bool | BatcherOptions = True,
        wall_clock: Callable[[], int] = wall_clock_ms,
        clock: Callable[[], int] = loop_clock_ms,
    ) -> None:
        self.rpc = RpcClient(
            transport,
            username=username or generate_anonymous_username(wall_clock(), os.urandom),
            keypair=keypair or KeyPair.generate(os.urandom),
            batching=batching,
            wall_clock=wall_clock,
            clock=clock,
        )

    @classmethod
    def http(
        cls,
        api_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        **options: Any,
    ) -> RondevuAPI:
        """An API speaking HTTP to ``{api_url}/rpc``; ``options`` as for the constructor.

        ``timeout`` (seconds, for each whole request) and ``max_response_bytes`` (the
        largest reply body read) are `HttpTransport`'s.
        """
        transport = HttpTransport(api_url, timeout=timeout, max_response_bytes=max_response_bytes)
        return cls(transport, **options)

    @property
    def username(self) -> str:
        """The username every call is signed as."""
        return self.rpc.username

    @property
    def keypair(self) -> KeyPair:
        """The Ed25519 identity (keep its private key secret; it is never logged)."""
        return self.rpc.keypair

    async def __aenter__(self) -> Self:
        await self.rpc.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self.rpc.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Fail pending calls with `ClientClosedError`, stop tasks, close the transport."""
        await self.rpc.aclose()

    # -- the nine RPCs (§7) ----------------------------------------------------------

    async def get_user(self, username: str) -> GetUserResult:
        """Is ``username`` claimed, and by which key?  No authentication."""
        result = await self._call(Method.GET_USER, {"username": username})
        return _parse(Method.GET_USER, GetUserResult, result)

    async def publish_service(
        self, service_fqn: str, offers: Sequence[str], ttl: int | None = None
    ) -> PublishServiceResult:
        """Create or replace the service ``service:version@me`` with these offer SDPs.
        ``ttl`` in ms is clamped by the server (its default when None)."""
        params: dict[str, Any] = {
            "serviceFqn": service_fqn,
            "offers": [{"sdp": sdp} for sdp in offers],
        }
        if ttl is not None:
            params["ttl"] = ttl
        result = await self._call(Method.PUBLISH_SERVICE, params)
        return _parse(Method.PUBLISH_SERVICE, PublishServiceResult, result)

    async def get_service(
        self, service_fqn: str, *, limit: int | None = None, offset: int | None = None
    ) -> ServiceEntry | ServicePage:
        """Look a service up: a `ServicePage` when ``limit`` is given, else the
        `ServiceEntry` of ``service:version@user`` (direct) or of a random provider."""
        params: dict[str, Any] = {"serviceFqn": service_fqn}
        if limit is not None:
            params["limit"] = limit
        if offset is not None:
            params["offset"] = offset
        result = await self._call(Method.GET_SERVICE, params)
        return _parse(Method.GET_SERVICE, GetServiceResult, result).root

    async def delete_service(self, service_fqn: str) -> None:
        """Delete one of my services with its offers and their candidates."""
        await self._call(Method.DELETE_SERVICE, {"serviceFqn": service_fqn})

    async def answer_offer(self, service_fqn: str, offer_id: str, sdp: str) -> None:
        """Answer an available offer with ``sdp``."""
        params = {"serviceFqn": service_fqn, "offerId": offer_id, "sdp": sdp}
        await self._call(Method.ANSWER_OFFER, params)

    async def get_offer_answer(
        self, service_fqn: str, offer_id: str
    ) -> GetOfferAnswerResult | None:
        """The answer to one of my offers, or None while it is not yet answered."""
        params = {"serviceFqn": service_fqn, "offerId": offer_id}
        try:
            result = await self._call(Method.GET_OFFER_ANSWER, params)
        except RpcError as error:
            if NOT_YET_ANSWERED in error.message:
                return None
            raise
        return _parse(Method.GET_OFFER_ANSWER, GetOfferAnswerResult, result)

    async def poll(self, since: int | None = None) -> PollResult:
        """Answers to my offers and the answerers' candidates newer than ``since``
        (server ms; None or 0: everything)."""
        params: dict[str, Any] = {} if since is None else {"since": since}
        result = await self._call(Method.POLL, params)
        return _parse(Method.POLL, PollResult, result)

    async def add_ice_candidates(
        self, service_fqn: str, offer_id: str, candidates: Sequence[IceCandidate]
    ) -> int:
        """Store my ICE candidates for an offer; how many were stored."""
        params = {"serviceFqn": service_fqn, "offerId": offer_id, "candidates": list(candidates)}
        result = await self._call(Method.ADD_ICE_CANDIDATES, params)
        return _parse(Method.ADD_ICE_CANDIDATES, AddIceCandidatesResult, result).count

    async def get_ice_candidates(
        self, service_fqn: str, offer_id: str, since: int = 0
    ) -> GetIceCandidatesResult:
        """The other side's candidates for an offer newer than ``since``."""
        params = {"serviceFqn": service_fqn, "offerId": offer_id, "since": since}
        result = await self._call(Method.GET_ICE_CANDIDATES, params)
        return _parse(Method.GET_ICE_CANDIDATES, GetIceCandidatesResult, result)

    # -- internals -------------------------------------------------------------------

    async def _call(self, method: Method, params: dict[str, Any]) -> Any:
        """One call's result, or the exception for its failure."""
        outcome = await self.rpc.call(RpcRequest(method=method, params=params))
        if isinstance(outcome, RpcFailed):
            if outcome.transport:
                raise TransportError(outcome.error)
            raise RpcError(method, outcome.error)
        return outcome.result


def _parse(method: Method, model: type[_M], result: Any) -> _M:
    try:
        # from_wire returns the class it is called on; mypy cannot see that through _M.
        return cast(_M, model.from_wire(result))
    except pydantic.ValidationError as error:
        log.debug("%s: malformed result: %s", method.value, error)
        raise ProtocolError(f"{method.value}: server returned a malformed result") from error
