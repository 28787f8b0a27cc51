"""Signaling transports: how one RPC body reaches a server and its reply comes back.

A `SignalingTransport` sends one POST /rpc body (a call object, or an array of them, as
the protocol allows: docs/protocol.md, "Calls, replies and batches") and returns the
parsed JSON reply, or raises `TransportError` when there is no usable reply.  It knows
nothing of batching, signing or methods: swapping one transport for another changes
nothing above it.

- `HttpTransport`: HTTP via httpx to any server speaking the 0.5.4 protocol (ours or the
  original), at ``{api_url}/rpc``.  Each request has a deadline for the whole exchange
  and a cap on the reply's size, so a slow or hostile server costs a bounded wait and
  bounded memory.  It also reads ``GET {api_url}/`` (`ServerInfoSource`), which tells
  the client whether the server holds calls (docs/long-polling.md).
- `InProcessTransport`: hands the body bytes straight to an in-process server object
  (`rondevu_server.server.RondevuServer` fits), no socket; for embedding and tests.

Both encode and judge replies with the same two functions (`encode_body`,
`decode_reply`), so they fail alike: a non-2xx status is ``HTTP <status>: <reason>``
(the original client's text), a body that is not JSON is a transport failure too.
The *shape* of a JSON reply is not checked here; that is the batcher's rule.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any, Protocol

import anyio
import httpx

from rondevu.errors import TransportError, ValidationError

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "ERR_NOT_JSON",
    "HttpTransport",
    "InProcessTransport",
    "RpcBodyHandler",
    "ServerInfoSource",
    "SignalingTransport",
    "decode_reply",
    "encode_body",
]

log = logging.getLogger("rondevu.transport")

DEFAULT_TIMEOUT = 30.0
"""Seconds an HTTP request may take, all of it (connect, send, wait, read), before it fails."""

DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
"""Largest reply body an `HttpTransport` reads, in bytes (32 MiB).  Generous: one
legitimate poll reply of a busy offerer can be large; a reply past it is a hostile or
broken server."""

# Bounds the close of an abandoned response: httpcore shields it already, and closing an
# HTTP/1.1 connection that is mid-body only drops the socket, so this never waits on the
# server; the bound is a second line of defence against a close that would hang.
_CLOSE_TIMEOUT = 5.0

ERR_NOT_JSON = "Server returned a reply that is not JSON"


class SignalingTransport(Protocol):
    """How a signaling call reaches a server: what `HttpTransport` and
    `InProcessTransport` have in common, and what a custom transport implements.

    It sends one POST /rpc body (a call object, or a list of them) and returns the
    parsed JSON reply, knowing nothing of signing, batching or methods; pass one to
    ``Rondevu.connect(transport=...)``.
    """

    async def send(self, body: Any) -> Any:
        """POST ``body`` (a call object or a list of them); the parsed JSON reply.

        Raises `TransportError` when there is no usable reply.  Cancelling the await
        abandons the request; the server may or may not have run it.
        """
        ...

    async def aclose(self) -> None:
        """Release what the transport holds.  Idempotent."""
        ...


class ServerInfoSource(Protocol):
    """A transport that can also read the server's ``GET /`` (`HttpTransport` can).

    The client reads it once, at start, to learn the server's extensions; a transport
    without it is used as a server without extensions (plain polling)."""

    timeout: float
    """Seconds one request may take: a held call must come back well within it."""

    async def server_info(self) -> Any:
        """The parsed ``GET /`` body; `TransportError` when there is no usable one."""
        ...


SERVER_INFO_TIMEOUT = 5.0
"""Seconds the ``GET /`` read may take, at most (it is small and made once)."""
SERVER_INFO_MAX_BYTES = 64 * 1024
"""Largest ``GET /`` body read: a few fields in practice."""


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
    ``https://api.example/rpc``).

    ``timeout`` is a deadline in seconds for the whole request: connecting, sending,
    waiting and reading the complete reply.  A server that answers slowly (even one byte
    at a time) fails the call with `TransportError` once it passes, and the connection
    is dropped.

    ``max_response_bytes`` caps the reply body: a ``Content-Length`` above it is refused
    before any of the body is read, and a body that grows past it (e.g. endless chunked
    encoding) fails with `TransportError` as soon as it does, so a reply never holds
    more than that in memory.  Replies are requested uncompressed
    (``Accept-Encoding: identity``) so the cap is also the decoded size; a reply that
    is compressed regardless is refused.

    Pass ``client`` to share an ``httpx.AsyncClient`` (its owner closes it); both bounds
    still apply to each request.  Otherwise the transport makes and closes its own.
    """

    def __init__(
        self,
        api_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValidationError("timeout must be a positive number of seconds")
        if max_response_bytes < 0:
            raise ValidationError("max_response_bytes must not be negative")
        self.url = api_url.rstrip("/") + "/rpc"
        self.info_url = api_url.rstrip("/") + "/"
        """Where `server_info` reads the server's description."""
        self.timeout = timeout
        """Deadline in seconds for one whole request."""
        self.max_response_bytes = max_response_bytes
        """Largest reply body read, in bytes."""
        self._owns_client = client is None
        # httpx's own timeout applies to each network operation; it stays as a bound on
        # the pieces, the deadline in `send` bounds the whole.
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)

    async def send(self, body: Any) -> Any:
        """POST ``body``; the parsed JSON reply (see `SignalingTransport.send`)."""
        log.debug("POST %s: %d call(s)", self.url, _calls_in(body))
        request = self._client.build_request(
            "POST",
            self.url,
            content=encode_body(body),
            headers={"Content-Type": "application/json", "Accept-Encoding": "identity"},
        )
        try:
            with anyio.fail_after(self.timeout):
                status, reason, content = await self._exchange(request)
        except TimeoutError:
            log.debug("POST %s: no complete reply within %g s", self.url, self.timeout)
            raise TransportError(
                f"Network error: no complete reply within the {self.timeout:g} s timeout"
            ) from None
        except httpx.HTTPError as error:
            # httpx's own text ("All connection attempts failed"...) names the cause.
            text = str(error) or type(error).__name__
            log.debug("POST %s failed: %s", self.url, text)
            raise TransportError(f"Network error: {text}") from error
        log.debug("POST %s: HTTP %d, %d bytes", self.url, status, len(content))
        return decode_reply(status, reason, content)

    async def server_info(self) -> Any:
        """``GET {api_url}/``, parsed: the server's name, version and extensions.

        Bounded like a call (within `SERVER_INFO_TIMEOUT` and `SERVER_INFO_MAX_BYTES`);
        raises `TransportError` when there is no usable JSON reply."""
        request = self._client.build_request(
            "GET", self.info_url, headers={"Accept-Encoding": "identity"}
        )
        try:
            with anyio.fail_after(min(self.timeout, SERVER_INFO_TIMEOUT)):
                status, reason, content = await self._exchange(request, SERVER_INFO_MAX_BYTES)
        except TimeoutError:
            raise TransportError("Network error: no server description in time") from None
        except httpx.HTTPError as error:
            raise TransportError(f"Network error: {str(error) or type(error).__name__}") from error
        return decode_reply(status, reason, content)

    async def _exchange(
        self, request: httpx.Request, limit: int | None = None
    ) -> tuple[int, str, bytes]:
        """Send ``request``; its status, reason and body, read within the size cap."""
        response = await self._client.send(request, stream=True)
        try:
            if not response.is_success:
                # decode_reply judges a non-2xx reply by its status alone: its body (an
                # error page, maybe compressed or endless) is not worth waiting for.
                return response.status_code, response.reason_phrase, b""
            body = await self._read(response, limit)
            return response.status_code, response.reason_phrase, body
        finally:
            # Runs on success, on error and when the deadline (or the caller) cancels us:
            # an unread body would otherwise keep the socket open.  Shielded so the
            # cancellation that brought us here cannot cut the close short.
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + _CLOSE_TIMEOUT
                await response.aclose()

    async def _read(self, response: httpx.Response, limit: int | None = None) -> bytes:
        """The body of ``response``, or `TransportError` when it is over the cap."""
        limit = self.max_response_bytes if limit is None else limit
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise TransportError(
                f"Server reply has Content-Encoding {encoding!r}; only identity was accepted"
            )
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise TransportError(self._too_large(f"Content-Length {int(declared)}"))
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > limit:
                raise TransportError(self._too_large(f"over {limit} bytes"))
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, what: str) -> str:
        text = f"Server reply too large: {what} (max_response_bytes={self.max_response_bytes})"
        log.debug("POST %s: %s", self.url, text)
        return text

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
