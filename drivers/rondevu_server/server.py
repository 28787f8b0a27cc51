"""`RondevuServer`: the whole request handling of POST /rpc, usable without a socket.

``await server.handle_rpc_body(body, client_key)`` returns ``(status, json bytes)`` for
one HTTP body: the rate limit, JSON parsing, the three 400 replies, batching (an object
or an array of at most 100 calls, run in order, each independent, answered in the same
shape), envelope checks, authentication and dispatch.  The ASGI app
(`rondevu_server.asgi`) is a thin layer over it, and an in-process client transport can
call it directly.

Long polling (our extension, `rondevu_server.longpoll`): a call that asks to wait and
has no news is held, alone or inside its batch (`_handle_batch` says how), and
`release_waiters` answers every held call at once (shutdown).

Time is read in exactly one place, the ``clock`` given to the server (Unix ms; tests
inject a fake one), once per call and once per re-read of a held call.  Errors: a
`ValidationError` becomes its own text on the wire; anything else is logged and
answered ``Internal server error``, so no SQL or stack text ever reaches a client (S11).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rondevu_core.errors import ValidationError
from rondevu_schemas.envelope import MAX_BATCH_SIZE
from rondevu_schemas.http import (
    BATCH_TOO_LARGE_ERROR,
    EMPTY_BATCH_ERROR,
    INVALID_REQUEST_FORMAT_ERROR,
)
from rondevu_server import longpoll, messages
from rondevu_server.auth import Authenticator, Call
from rondevu_server.config import LOOPBACK_PREFIXES, ServerConfig
from rondevu_server.jsonwire import dumps, parse_body
from rondevu_server.longpoll import Held, Signal, Wait, WaitRegistry
from rondevu_server.methods import METHODS, Context
from rondevu_server.ratelimit import RateLimiter
from rondevu_server.storage import Storage
from rondevu_server.verifier import SignatureVerifier

__all__ = [
    "MAX_BATCH_SIZE",
    "RondevuServer",
    "dumps",
    "open_storage",
    "shared_database",
    "system_clock",
]

log = logging.getLogger("rondevu_server")


def system_clock() -> int:
    """Unix time in milliseconds from the system clock."""
    return time.time_ns() // 1_000_000


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _sqlite_path(url: str) -> str:
    # sqlite:///abs/path -> /abs/path; sqlite://rel/path -> rel/path; bare paths as is
    return url.removeprefix("sqlite://") or ":memory:"


def shared_database(url: str) -> bool:
    """Whether several processes opening ``url`` share one database (not ``:memory:``)."""
    if _is_postgres(url):
        return True
    path = _sqlite_path(url)
    return path != ":memory:" and not path.startswith("file::memory:") and "mode=memory" not in path


async def open_storage(config: ServerConfig) -> Storage:
    """Open the backend ``config.db`` names: a ``postgresql://`` DSN or SQLite."""
    url = config.db
    if _is_postgres(url):
        from rondevu_server.postgres_storage import PostgresStorage

        return await PostgresStorage.open(
            url, schema=config.db_schema or None, pool_size=config.db_pool_size
        )
    from rondevu_server.sqlite_storage import SqliteStorage

    return await SqliteStorage.open(_sqlite_path(url))


class RondevuServer:
    """The signaling server's request handling over one `Storage`."""

    def __init__(
        self,
        config: ServerConfig,
        storage: Storage,
        *,
        clock: Callable[[], int] = system_clock,
    ) -> None:
        self.config = config
        self.storage = storage
        self.clock = clock
        self._verifier = SignatureVerifier(threads=config.verify_threads)
        self.waits = WaitRegistry(
            max_waiting=config.long_poll_max_waiting,
            max_waiting_per_user=config.long_poll_max_waiting_per_user,
        )
        """The calls held now (long polling)."""
        self._context = Context(
            config=config,
            storage=storage,
            auth=Authenticator(
                storage, cache_size=config.username_cache_size, verifier=self._verifier
            ),
            waits=self.waits,
        )
        self._limiter = (
            RateLimiter(
                rate=config.rate_limit_per_second,
                burst=config.rate_limit_burst,
                max_clients=config.rate_limit_clients,
            )
            if config.rate_limit_per_second > 0
            else None
        )
        self._cleanup_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, config: ServerConfig, *, clock: Callable[[], int] = system_clock
    ) -> RondevuServer:
        """A server over the storage ``config.db`` names (schema created or migrated),
        hearing the wake-ups of other processes on that database (long polling)."""
        storage = await open_storage(config)
        server = cls(config, storage, clock=clock)
        if config.long_poll_max_wait_ms > 0:
            try:
                await storage.listen(server.waits)
            except BaseException:
                await storage.close()
                raise
        return server

    # -- lifecycle ------------------------------------------------------------------

    def start_cleanup(self) -> None:
        """Start deleting expired rows every ``cleanup_interval`` ms (S9)."""
        if self._cleanup_task is None:
            self._cleanup_task = asyncio.get_running_loop().create_task(self._cleanup_loop())

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.cleanup_interval / 1000)
            await self.cleanup_once()

    async def cleanup_once(self) -> None:
        """One cleanup pass; failures are logged, never raised."""
        try:
            counts = await self.storage.cleanup(self.clock())
        except Exception:
            log.exception("cleanup failed")
            return
        if counts.offers or counts.services or counts.usernames:
            log.info(
                "cleanup",
                extra={
                    "offers": counts.offers,
                    "services": counts.services,
                    "usernames": counts.usernames,
                },
            )

    def release_waiters(self) -> None:
        """Answer every held call now and hold no more (the start of a shutdown: an HTTP
        server waits for open requests before it stops).  Idempotent."""
        self.waits.close()

    async def aclose(self) -> None:
        """Answer held calls, stop the cleanup task and the signature worker, and close
        the storage."""
        self.release_waiters()
        if self._cleanup_task is not None:
            self._cleanup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup_task
            self._cleanup_task = None
        self._verifier.close()
        await self.storage.close()

    # -- requests -------------------------------------------------------------------

    def is_rate_limited(self, client_key: str | None, now: int, calls: int = 1) -> bool:
        """True when ``client_key`` has no budget left for ``calls`` more calls, which are
        then charged (``calls=0`` only looks: is the budget empty?).  None and, unless
        configured otherwise, loopback are exempt."""
        if self._limiter is None or client_key is None:
            return False
        if not self.config.rate_limit_loopback and client_key.startswith(LOOPBACK_PREFIXES):
            return False
        return not self._limiter.allow(client_key, now, calls)

    def oversized_reply(self, size: int) -> tuple[int, bytes] | None:
        """The 413 reply when a body of ``size`` bytes exceeds ``max_body_bytes``, else None.

        The one body-size rule: `handle_rpc_body` applies it to every body, and the ASGI
        app asks it about the declared and the received length so that it can stop
        reading an oversized body early.
        """
        limit = self.config.max_body_bytes
        if size <= limit:
            return None
        return 413, dumps({"success": False, "error": messages.BODY_TOO_LARGE.format(limit=limit)})

    async def handle_rpc_body(
        self,
        body: bytes,
        client_key: str | None = None,
        *,
        disconnected: Callable[[], Awaitable[object]] | None = None,
    ) -> tuple[int, bytes]:
        """Answer one POST /rpc body: ``(HTTP status, JSON body)``.

        ``client_key`` identifies the sender for the rate limit (an address; None for a
        trusted in-process caller).  A body over ``max_body_bytes`` gets 413, in-process
        too.  Parsed requests always get 200 (§2).  ``disconnected``, when given,
        returns once the client has gone: a held call then stops waiting at once
        (an in-process caller cancels instead).
        """
        too_large = self.oversized_reply(len(body))
        if too_large is not None:
            return too_large
        # An empty budget refuses before parsing (parsing is work too); the body is
        # charged once its size is known: one token per call, one for anything else.
        if self.is_rate_limited(client_key, self.clock(), calls=0):
            return 429, _RATE_LIMITED_REPLY
        try:
            request = parse_body(body)
        except (ValueError, RecursionError):
            request = _UNPARSED
        batch = isinstance(request, list) and 0 < len(request) <= MAX_BATCH_SIZE
        if self.is_rate_limited(client_key, self.clock(), len(request) if batch else 1):
            return 429, _RATE_LIMITED_REPLY
        if request is _UNPARSED:
            return 400, dumps({"success": False, "error": INVALID_REQUEST_FORMAT_ERROR})
        if not isinstance(request, list):
            return 200, _encode(await self.handle_call(request, disconnected))
        if not request:
            return 400, dumps({"error": EMPTY_BATCH_ERROR})
        if not batch:
            return 400, dumps({"error": BATCH_TOO_LARGE_ERROR})
        return 200, await self._handle_batch(request, disconnected)

    async def _handle_batch(
        self, calls: list[Any], disconnected: Callable[[], Awaitable[object]] | None
    ) -> bytes:
        """Run a batch's calls in order into one JSON array.

        Once the reply has grown past ``max_response_bytes``, the calls left are answered
        with an error instead of being run: a few small calls (paginated discovery,
        polls of many large answers) can otherwise make a reply hundreds of times their
        own size, all of it held in memory at once.  A single call is never cut short;
        its size is bounded by the per-user and per-offer limits.

        Held calls (long polling): every call runs in order as usual, a waiting one
        reading its answer at its turn; only once the last call has run, if no waiting
        call had news, is the batch held, until the first of its waiting calls has news
        (each woken one reads again; the others keep the answer they read), the
        earliest of their waits ends, or the server releases held calls.  So the other
        calls are never delayed, a write later in the same batch that gives a waiting
        call news answers the batch at once, and the replies stay in request order.
        """
        limit = self.config.max_response_bytes
        parts: list[bytes | Held[dict[str, Any]]] = []
        signal = Signal()
        size = 0
        for index, item in enumerate(calls):
            if index:
                # Let other requests in between calls: in-memory SQLite runs on the event
                # loop, and a batch of 100 discovery calls would otherwise hold it alone.
                await asyncio.sleep(0)
            if size > limit:
                parts.append(dumps(_not_run(limit)))
                continue
            outcome = await self._start_call(item, signal)
            if isinstance(outcome, Held):
                parts.append(outcome)
                size += len(_encode(outcome.answer)) + 1
                continue
            part = _encode(outcome)
            parts.append(part)
            size += len(part) + 1
        held = [part for part in parts if isinstance(part, Held)]
        if held:
            await longpoll.settle(self.waits, held, signal, self.clock, disconnected)
        encoded = [part if isinstance(part, bytes) else _encode(part.answer) for part in parts]
        return b"[" + b",".join(encoded) + b"]"

    async def handle_call(
        self, request: Any, disconnected: Callable[[], Awaitable[object]] | None = None
    ) -> dict[str, Any]:
        """One call object (already parsed JSON) -> its response object (held first
        when it asks to wait and has no news; see `handle_rpc_body`)."""
        signal = Signal()
        outcome = await self._start_call(request, signal)
        if not isinstance(outcome, Held):
            return outcome
        await longpoll.settle(self.waits, [outcome], signal, self.clock, disconnected)
        return outcome.answer

    async def _start_call(
        self, request: Any, signal: Signal
    ) -> dict[str, Any] | Held[dict[str, Any]]:
        """Run one call: its response object, or the `Held` call it became."""
        try:
            call = _envelope(request)
            handler = METHODS.get(call.method)
            if handler is None:
                raise ValidationError(messages.UNKNOWN_METHOD.format(method=call.method))
            now = self.clock()
            result = await handler(self._context, call, now)
        except Exception as error:
            return _failure(error, request)
        if not isinstance(result, Wait):
            return {"success": True, "result": result}
        return await longpoll.begin(
            self.waits,
            key=result.key,
            user=result.user,
            wait_ms=result.wait_ms,
            read=_responding(result.read, request),
            now=now,
            signal=signal,
        )


_UNPARSED = object()
"""Stands for a body that is not JSON (charged one call, then answered 400)."""
_RATE_LIMITED_REPLY = dumps({"success": False, "error": messages.RATE_LIMITED})
_INTERNAL_ERROR_REPLY = dumps({"success": False, "error": messages.INTERNAL_ERROR})


def _failure(error: Exception, request: Any) -> dict[str, Any]:
    """The response object for a call that raised ``error``: a `ValidationError`'s own
    text, else (logged) the internal error, which never says what went wrong (S11)."""
    if isinstance(error, ValidationError):
        return {"success": False, "error": str(error)}
    method = request.get("method") if isinstance(request, dict) else None
    log.error("internal error", exc_info=error, extra={"method": str(method)[:64]})
    return {"success": False, "error": messages.INTERNAL_ERROR}


def _responding(read: longpoll.Read[Any], request: Any) -> longpoll.Read[dict[str, Any]]:
    """``read`` giving response objects: a failed read (the offer expired meanwhile, the
    database went away) is that call's error, and news - it ends the wait."""

    async def respond(now: int) -> tuple[bool, dict[str, Any]]:
        try:
            news, result = await read(now)
        except Exception as error:
            return True, _failure(error, request)
        return news, {"success": True, "result": result}

    return respond


def _not_run(limit: int) -> dict[str, Any]:
    return {"success": False, "error": messages.BATCH_REPLY_TOO_LARGE.format(limit=limit)}


def _encode(response: dict[str, Any]) -> bytes:
    """One call's response as JSON; a response that cannot be encoded (a bug: handlers
    echo only encodable values) becomes that call's internal error, not the request's."""
    try:
        return dumps(response)
    except (TypeError, ValueError, RecursionError):
        log.exception("response not encodable")
        return _INTERNAL_ERROR_REPLY


def _envelope(request: Any) -> Call:
    """Check the call object's shape in the original's order (§3)."""
    if request is None:
        raise ValidationError(messages.NULL_CALL)
    fields = request if isinstance(request, dict) else {}
    method = fields.get("method")
    if not isinstance(method, str) or not method:
        raise ValidationError(messages.MISSING_METHOD)
    message = fields.get("message")
    if not isinstance(message, str) or not message:
        raise ValidationError(messages.MISSING_MESSAGE)
    signature = fields.get("signature")
    if not isinstance(signature, str) or not signature:
        raise ValidationError(messages.MISSING_SIGNATURE)
    params = fields.get("params")
    return Call(
        method=method,
        message=message,
        signature=signature,
        public_key=fields.get("publicKey"),
        params=params if isinstance(params, dict) else {},
    )
