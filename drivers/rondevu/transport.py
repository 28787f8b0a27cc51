"""Signaling transports: how one RPC body reaches a server and its reply comes back.

A `SignalingTransport` sends one POST /rpc body (a call object, or an array of them, as
PROTOCOL.md §2 allows) and returns the parsed JSON reply, or raises `TransportError` when
there is no usable reply.  It knows nothing of batching, signing or methods: swapping one
transport for another changes nothing above it.

- `HttpTransport`: HTTP via httpx to any server speaking the 0.5.4 protocol (ours or the
  original), at ``{api_url}/rpc``.
- `InProcessTransport`: hands the body bytes straight to an in-process server object
  (`rondevu_server.server.RondevuServer` fits), no socket; for embedding and tests.

Both encode and judge replies with the same two functions (`encode_body`,
`decode_reply`), so they fail alike: a non-2xx status is ``HTTP <status>: <reason>``
(the original client's text, §15.5), a body that is not JSON is a transport failure too.
The *shape* of a JSON reply is not checked here; that is the batcher's rule.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any, Protocol

import httpx

from rondevu.errors import TransportError

__all__ = [
    "DEFAULT_TIMEOUT",
    "ERR_NOT_JSON",
    "HttpTransport",
    "InProcessTransport",
    "RpcBodyHandler",
    "SignalingTransport",
    "decode_reply",
    "encode_body",
]

log = logging.getLogger("rondevu.transport")

DEFAULT_TIMEOUT = 30.0
"""Seconds an HTTP request may take (connect, send, wait, read) before it fails."""

ERR_NOT_JSON = "Server returned a reply that is not JSON"


class SignalingTransport(Protocol):
    """Carries one RPC body to a server; see the module docstring."""

    async def send(self, body: Any) -> Any:
        """POST ``body`` (a call object or a list of them); the parsed JSON reply.

        Raises `TransportError` when there is no usable reply.  Cancelling the await
        abandons the request; the server may or may not have run it.
        """
        ...

    async def aclose(self) -> None:
        """Release what the transport holds.  Idempotent."""
        ...


def encode_body(body: Any) -> bytes:
    """Compact UTF-8 JSON, as ``JSON.stringify`` sends it."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_reply(status: int, reason: str, content: bytes) -> Any:
    """The parsed reply of an HTTP exchange, or `TransportError` when it is not usable."""
    if not 200 <= status < 300:
        raise TransportError(f"HTTP {status}: {reason}")
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        raise TransportError(ERR_NOT_JSON) from None


def _calls_in(body: Any) -> int:
    return len(body) if isinstance(body, list) else 1


class HttpTransport:
    """POST /rpc over HTTP with httpx.

    ``api_url`` is the server's base URL (``https://api.example`` -> POSTs to
    ``https://api.example/rpc``).  Pass ``client`` to share an ``httpx.AsyncClient``
    (its owner closes it); otherwise the transport makes and closes its own, with
    ``timeout`` seconds for each request.
    """

    def __init__(
        self,
        api_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = api_url.rstrip("/") + "/rpc"
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)

    async def send(self, body: Any) -> Any:
        """POST ``body``; the parsed JSON reply (see `SignalingTransport.send`)."""
        log.debug("POST %s: %d call(s)", self.url, _calls_in(body))
        try:
            response = await self._client.post(
                self.url,
                content=encode_body(body),
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as error:
            # httpx's own text ("All connection attempts failed"...) names the cause.
            text = str(error) or type(error).__name__
            log.debug("POST %s failed: %s", self.url, text)
            raise TransportError(f"Network error: {text}") from error
        log.debug(
            "POST %s: HTTP %d, %d bytes", self.url, response.status_code, len(response.content)
        )
        return decode_reply(response.status_code, response.reason_phrase, response.content)

    async def aclose(self) -> None:
        """Close the httpx client if this transport made it."""
        if self._owns_client:
            await self._client.aclose()


class RpcBodyHandler(Protocol):
    """What `InProcessTransport` needs of a server: POST /rpc without HTTP."""

    async def handle_rpc_body(
        self, body: bytes, client_key: str | None = None
    ) -> tuple[int, bytes]:
        """Answer one POST /rpc body with ``(HTTP status, JSON body)``."""
        ...


class InProcessTransport:
    """Calls a server's request handling directly: same bytes as HTTP, no socket.

    The body is encoded and the reply decoded exactly as over HTTP, so the server sees
    what a remote client would send.  The caller owns the server; `aclose` leaves it
    running.  ``client_key`` is what the server's rate limit sees (None: exempt).
    """

    def __init__(self, server: RpcBodyHandler, *, client_key: str | None = None) -> None:
        self.server = server
        self.client_key = client_key

    async def send(self, body: Any) -> Any:
        """Hand ``body`` to the server; the parsed JSON reply."""
        log.debug("in-process /rpc: %d call(s)", _calls_in(body))
        status, content = await self.server.handle_rpc_body(encode_body(body), self.client_key)
        log.debug("in-process /rpc: status %d, %d bytes", status, len(content))
        return decode_reply(status, _reason(status), content)

    async def aclose(self) -> None:
        """Nothing to release: the server belongs to the caller."""


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
