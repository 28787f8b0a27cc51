"""`Rondevu`: the public entry point, the Python face of client 0.18.9.

One `Rondevu` is one identity (username + Ed25519 key) talking to one signaling server.
It offers the two halves of a rendezvous:

- **answerer**: ``await rondevu.connect_to_service("chat:1.0.0@alice")`` returns a
  `DurableConnection` at once; it connects, reconnects and buffers on its own;
- **offerer**: ``rondevu.publish_service("chat:1.0.0", max_offers=3)`` then
  ``await rondevu.start_filling()``; every peer that connects arrives as a
  `DurableConnection` through ``rondevu.on("connection:opened", …)`` or
  ``async for conn in rondevu.incoming()``.

Everything protocol-shaped is decided by the sans-IO machines of `rondevu_core`
(`Connection`, `OfferPool`); this module wires them to a `MachineRunner`, the signed RPC
client and aiortc, and keeps the bookkeeping an application asks about.

Lifetime: use ``async with Rondevu.connect(api_url) as rondevu:``; leaving the block
closes every connection and peer connection, stops every task and closes the HTTP
client.  ``connect`` itself does no network I/O, like the original.  Entering the block
reads the server's ``GET /`` once, in the background: if the server holds calls (our
extension, docs/long-polling.md) the machines long-poll; otherwise, and against server
0.5.4, they poll exactly as the original does.  The first connection or publication
waits for that read (a few milliseconds; at most a few seconds if the server is slow).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup, TaskStatus

from rondevu.api import RondevuAPI
from rondevu.connection import DEFAULT_INBOX_BYTES, DEFAULT_INBOX_SIZE, DurableConnection
from rondevu.errors import ClientClosedError, RondevuError, RpcError, UsernameTakenError
from rondevu.rpc_client import wall_clock_ms
from rondevu.runtime import MachineRunner
from rondevu.transport import HttpTransport, SignalingTransport
from rondevu_core import events as ev
from rondevu_core.batcher import BatcherOptions
from rondevu_core.config import ConnectionConfig, DataChannelOptions, PoolConfig
from rondevu_core.connection import Connection
from rondevu_core.errors import UsageError, ValidationError
from rondevu_core.inputs import Close, Connect, StartFilling, StopFilling
from rondevu_core.pool import OfferPool, PoolState
from rondevu_core.rpc import Method
from rondevu_core.rules.error_kinds import ErrorKind
from rondevu_core.rules.fqn import (
    DiscoveryMode,
    connect_target,
    discovery_mode,
    validate_service_fqn,
)
from rondevu_core.rules.ice import (
    IceConfiguration,
    IceServer,
    IceTransportPolicy,
    ice_configuration,
)
from rondevu_core.rules.server_info import long_poll_wait_ms
from rondevu_core.rules.signing import KeyPair
from rondevu_core.rules.usernames import generate_anonymous_username, validate_username
from rondevu_schemas.methods import ServiceEntry, ServicePage

__all__ = ["IncomingConnection", "Rondevu", "ServiceStatus"]

logger = logging.getLogger("rondevu")

DEFAULT_INCOMING_BACKLOG = 64

WITHDRAW_GRACE_S = 2.0
"""How long closing waits for the published offers to be withdrawn (deleteService), so
peers stop answering them; a server that does not answer in time is left behind."""

IceServersOption = str | Sequence[IceServer | Mapping[str, object]] | IceConfiguration | None


@dataclass(frozen=True, slots=True, kw_only=True)
class IncomingConnection:
    """``connection:opened``: a peer connected to one of our offers."""

    name = "connection:opened"
    offer_id: str
    """The offer the peer answered."""
    connection: DurableConnection
    """Our side of the new connection (role ``"offerer"``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceStatus:
    """What ``get_service_status()`` reports (0.18.9 ``getServiceStatus``)."""

    active: bool
    """A service is published and its pool is running."""
    offer_count: int
    """Unanswered offers the pool holds now."""
    max_offers: int
    """The pool's target of unanswered offers."""
    filling: bool
    """The pool is publishing and polling (after `start_filling`, until stopped or closed)."""


class _Pool:
    """The running offer pool of the published service and its connections."""

    def __init__(self, machine: OfferPool, runner: MachineRunner) -> None:
        self.machine = machine
        self.runner = runner
        self.connections: dict[int, DurableConnection] = {}
        self.opened: set[int] = set()
        self.first_publication = anyio.Event()
        """Set when the first publishService of this pool succeeded or failed."""
        self.publish_error: str | None = None


class Rondevu:
    """One identity (a username and its Ed25519 key pair) on one signaling server.

    Build it with `Rondevu.connect` (which does no I/O) and use it in ``async with``:
    the block owns every task, peer connection and HTTP connection the client makes,
    and leaving it closes them all, after letting messages already sent leave.  It
    plays either half of a rendezvous, or both:

    - to connect, ``conn = await client.connect_to_service("chat:1.0.0@alice")`` returns
      a `DurableConnection` at once, which connects, reconnects and buffers on its own;
    - to publish, ``client.publish_service("chat:1.0.0", max_offers=3)`` then ``await
      client.start_filling()``; every peer that connects arrives as a `DurableConnection`
      through ``async for conn in client.incoming()`` or
      ``client.on("connection:opened", callback)``.

    For example, a publisher that echoes what its peers send::

        async with Rondevu.connect("http://127.0.0.1:3000", username="alice") as alice:
            alice.publish_service("chat:1.0.0", max_offers=3)
            await alice.start_filling()
            async for conn in alice.incoming():
                conn.on("message", lambda event, conn=conn: conn.send(event.data))

    A username is bound to the first key that uses it: keep both with
    `rondevu.Identity` to come back under the same name.  Calls that talk to the server
    raise `RpcError` when it refuses and `TransportError` when it cannot be reached;
    using the client outside its ``async with`` block raises `UsageError`.  ``api`` is
    the low-level `RondevuAPI` underneath.
    """

    def __init__(
        self,
        api: RondevuAPI,
        *,
        connection_config: ConnectionConfig | None = None,
        host_addresses: Sequence[str] | None = None,
        unit_random: Callable[[], float] = random.random,
        long_poll: bool = True,
    ) -> None:
        self.api = api
        """The low-level API: one typed async method per RPC (bypasses the machines)."""
        self.connection_config = connection_config or ConnectionConfig()
        self.host_addresses = tuple(host_addresses) if host_addresses is not None else None
        self._unit_random = unit_random
        self.long_poll = long_poll
        """Whether to let a server that offers it hold calls (False: always plain polls)."""
        self._long_poll_ms = 0
        self._server_known = anyio.Event()
        self._stack: AsyncExitStack | None = None
        self._group: TaskGroup | None = None
        self._stopped = anyio.Event()
        self._closed = False
        self._answerers: dict[int, tuple[DurableConnection, MachineRunner]] = {}
        self._listeners: dict[str, list[Callable[[Any], Any]]] = {}
        self._published: PoolConfig | None = None
        self._pool: _Pool | None = None
        self._incoming: deque[DurableConnection] = deque()
        self._incoming_changed = anyio.Event()
        self.incoming_backlog = DEFAULT_INCOMING_BACKLOG
        """Opened connections `incoming` keeps for a consumer; past it the oldest (closed
        ones first) leave the backlog with a warning.  They stay open, and every one is
        announced to ``connection:opened`` listeners."""
        self.inbox_size = DEFAULT_INBOX_SIZE
        """Unread messages each new connection keeps (`DurableConnection`)."""
        self.inbox_bytes = DEFAULT_INBOX_BYTES
        """Unread bytes each new connection keeps (`DurableConnection`)."""

    @classmethod
    def connect(
        cls,
        api_url: str | None = None,
        *,
        username: str | None = None,
        keypair: KeyPair | None = None,
        ice_servers: IceServersOption = None,
        ice_transport_policy: IceTransportPolicy | None = None,
        batching: bool | BatcherOptions = True,
        transport: SignalingTransport | None = None,
        connection_config: ConnectionConfig | None = None,
        host_addresses: Sequence[str] | None = None,
        long_poll: bool = True,
    ) -> Rondevu:
        """Build a client; no network I/O happens here (as in 0.18.9).  Use the result
        in ``async with``.

        ``api_url`` is the server's base URL (or pass ``transport``, e.g. an
        `InProcessTransport`).  ``username`` defaults to a fresh ``anon-…`` name and
        ``keypair`` to a new Ed25519 key; the server claims the name on first use.
        ``ice_servers`` is a preset name (``ipv4-turn``, ``hostname-turns``,
        ``google-stun``, ``relay-only``), a list of ``RTCIceServer``-shaped mappings
        (``[]`` for none), or None for 0.18.9's default Google STUN server.
        ``ice_transport_policy`` overrides the policy (`IceTransportPolicy.RELAY`:
        relayed candidates only).  ``host_addresses`` restricts host ICE candidates
        (``["127.0.0.1"]`` keeps WebRTC on loopback).  ``batching`` lets calls made
        close together share one HTTP request; ``connection_config`` sets timeouts,
        reconnection and buffering.  ``long_poll=False`` never lets the server hold
        calls, even one that offers it (see docs/long-polling.md).

        Raises `ValidationError` for a malformed ``username`` or neither ``api_url``
        nor ``transport``, and `ValueError` for a malformed ``ice_servers`` entry.
        """
        if transport is None:
            if not api_url:
                raise ValidationError("api_url or transport is required")
            transport = HttpTransport(api_url)
        if username is not None:
            validate_username(username)
        if isinstance(ice_servers, IceConfiguration):
            ice = ice_servers
        else:
            ice = ice_configuration(ice_servers, transport_policy=ice_transport_policy)
        config = dataclasses.replace(connection_config or ConnectionConfig(), ice=ice)
        api = RondevuAPI(
            transport,
            username=username or generate_anonymous_username(wall_clock_ms(), os.urandom),
            keypair=keypair or KeyPair.generate(os.urandom),
            batching=batching,
        )
        return cls(
            api, connection_config=config, host_addresses=host_addresses, long_poll=long_poll
        )

    # -- identity ----------------------------------------------------------------------

    @property
    def username(self) -> str:
        """The username every call is signed as."""
        return self.api.username

    @property
    def keypair(self) -> KeyPair:
        """The Ed25519 key pair (export it to keep the username across runs)."""
        return self.api.keypair

    @property
    def public_key(self) -> str:
        """The base64 public key."""
        return self.api.keypair.public_key

    async def is_username_available(self, username: str) -> bool:
        """True when ``username`` is not claimed (or its claim expired).

        Raises `TransportError` when the server cannot be reached, `RpcError` when it
        refuses.
        """
        return (await self.api.get_user(username)).available

    async def is_username_claimed(self) -> bool:
        """True when our username is claimed by our key; False on any error (as 0.18.9)."""
        try:
            user = await self.api.get_user(self.username)
        except Exception:
            return False
        return not user.available and getattr(user, "public_key", None) == self.public_key

    # -- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None or self._closed:
            raise UsageError("a Rondevu client can be entered only once")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await stack.enter_async_context(self.api)
            outer = await stack.enter_async_context(anyio.create_task_group())
            await outer.start(self._supervise)
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def _supervise(self, *, task_status: TaskStatus[None]) -> None:
        # The runners live in this task's own group, so aclose() can stop them from any
        # task without cancelling the code inside the application's `async with`.
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                group.start_soon(self._learn_server, name="rondevu GET /")
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._stopped.set()

    async def _learn_server(self) -> None:
        """Read ``GET /`` once: may the machines long-poll, and for how long?"""
        try:
            transport = self.api.rpc.transport
            read = getattr(transport, "server_info", None)
            timeout = getattr(transport, "timeout", None)
            if self.long_poll and read is not None and isinstance(timeout, int | float):
                try:
                    body = await read()
                except Exception as error:  # no description: a server without extensions
                    logger.debug("GET / failed (%s): plain polling", error)
                else:
                    self._long_poll_ms = long_poll_wait_ms(
                        body, request_timeout_ms=int(timeout * 1000)
                    )
                    logger.debug("server holds calls up to %d ms", self._long_poll_ms)
        finally:
            self._server_known.set()

    async def _machine_config(self, config: ConnectionConfig) -> ConnectionConfig:
        """``config`` as the machines need it for this server (long polling or not)."""
        await self._server_known.wait()
        return dataclasses.replace(config, long_poll_wait_ms=self._long_poll_ms)

    @property
    def long_poll_wait_ms(self) -> int | None:
        """How long the server may hold a poll (``waitMs``), 0 for plain polling, None
        until the server's ``GET /`` has been read."""
        return self._long_poll_ms if self._server_known.is_set() else None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.aclose()
        finally:
            if self._stack is not None:
                stack, self._stack = self._stack, None
                await stack.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Close every connection and the pool, stop every task, close the transport.

        Idempotent, and callable from any task: code waiting on this client (for
        example in `start_filling`) is woken with `ClientClosedError`.
        """
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                runners: list[MachineRunner] = []
                pool_calls: int | None = None
                if self._pool is not None:
                    self._pool.first_publication.set()  # a waiting start_filling() gives up
                    pool_calls = self._pool.runner.rpc_calls
                    self._pool.runner.feed(Close(now=self._pool.runner.clock()))
                for _conn, runner in list(self._answerers.values()):
                    runner.feed(Close(now=runner.clock(), reason="Client closed"))
                    runners.append(runner)
                # Together: each may linger while its sent messages leave (bounded), and
                # the pool waits (bounded) for its offers to be withdrawn.
                async with anyio.create_task_group() as closing:
                    if self._pool is not None:
                        closing.start_soon(
                            partial(
                                self._pool.runner.aclose,
                                calls_after=pool_calls,
                                grace=WITHDRAW_GRACE_S,
                            )
                        )
                    for runner in runners:
                        closing.start_soon(runner.aclose)
                self._answerers.clear()
                self._notify_incoming()  # a waiting `incoming` ends
            if self._group is not None:
                self._group.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            if self._group is not None:
                await self._stopped.wait()
            await self.api.aclose()

    def _require_running(self) -> TaskGroup:
        if self._closed:
            raise UsageError("the Rondevu client is closed")
        if self._group is None:
            raise UsageError("use the client inside `async with Rondevu.connect(...)`")
        return self._group

    async def _start(self, runner: MachineRunner) -> None:
        await self._require_running().start(runner.run)

    # -- events ------------------------------------------------------------------------

    def on(self, name: str, callback: Callable[[Any], Any]) -> Callable[[], None]:
        """Listen to client-level events: ``connection:opened`` (an `IncomingConnection`),
        ``offer:created``, ``offers:published``, ``offers:publish:failed``,
        ``service:republished`` (the pool published again offers the server lost),
        ``error:permanent`` (the pool stopped on a refusal no retry can fix),
        ``protocol:error``.  Returns a function that removes the listener."""
        self._listeners.setdefault(name, []).append(callback)

        def off() -> None:
            if callback in self._listeners.get(name, []):
                self._listeners[name].remove(callback)

        return off

    def _emit(self, name: str, payload: Any) -> None:
        for callback in list(self._listeners.get(name, ())):
            try:
                result = callback(payload)
            except Exception:
                logger.exception("listener for %s failed", name)
                continue
            if hasattr(result, "__await__") and self._group is not None and not self._closed:
                self._group.start_soon(_await, result)

    async def incoming(self) -> AsyncIterator[DurableConnection]:
        """Every connection a peer opens to our offers, in order (one consumer); ends when
        the client closes.  Up to `incoming_backlog` opened connections wait for it."""
        while True:
            while not self._incoming:
                if self._closed:
                    return
                await self._incoming_changed.wait()
            yield self._incoming.popleft()

    def _queue_incoming(self, conn: DurableConnection) -> None:
        self._incoming.append(conn)
        if len(self._incoming) > max(1, self.incoming_backlog):
            victim = next((c for c in self._incoming if c.closed), self._incoming[0])
            self._incoming.remove(victim)
            logger.warning(
                "incoming backlog full (%d): connection %d left it unread (iterate "
                "incoming() or listen to connection:opened)",
                self.incoming_backlog,
                victim.connection_id,
            )
        self._notify_incoming()

    def _notify_incoming(self) -> None:
        self._incoming_changed.set()
        self._incoming_changed = anyio.Event()

    # -- answerer side -------------------------------------------------------------------

    async def connect_to_service(
        self,
        service_fqn: str | None = None,
        *,
        service: str | None = None,
        username: str | None = None,
        connection_config: ConnectionConfig | None = None,
    ) -> DurableConnection:
        """Connect to a published service; returns the connection immediately.

        Either ``service_fqn`` (``chat:1.0.0@alice``, or ``chat:1.0.0`` for a random
        provider) or ``service`` plus an optional ``username``.  The connection fetches
        an offer, answers it and connects in the background: ``await
        conn.wait_connected(timeout)`` to wait.  Reconnections return to the same
        provider, on a fresh offer.  ``connection_config`` overrides the client's for
        this connection, except the ICE servers, which are always the client's.

        Raises `ValidationError` for a malformed service name and `UsageError` outside
        the client's ``async with`` block.  Failures while connecting are not raised
        here: they arrive as events and end `DurableConnection.wait_connected`.
        """
        fqn = connect_target(service_fqn, service, username)
        self._require_running()
        config = await self._machine_config(self._with_client_ice(connection_config))
        machine = Connection.answerer(fqn, config=config, unit_random=self._unit_random)
        holder: list[DurableConnection] = []
        runner = self._runner(machine, lambda event: holder[0].dispatch(event))
        conn = DurableConnection(
            runner=runner,
            connection_id=machine.connection_id,
            role="answerer",
            service_fqn=str(fqn),
            inbox_size=self.inbox_size,
            inbox_bytes=self.inbox_bytes,
            on_closed=self._forget_answerer,
            explain_refusal=self.explain_refusal,
        )
        conn.peer_username = fqn.username  # None after discovery: `offer:fetched` tells
        holder.append(conn)
        self._answerers[conn.connection_id] = (conn, runner)
        await self._start(runner)
        runner.feed(Connect(now=runner.clock()))
        return conn

    def _with_client_ice(self, config: ConnectionConfig | None) -> ConnectionConfig:
        # A per-call config built without ``ice`` would otherwise fall back to the
        # default public STUN server and silently undo ``connect(ice_servers=...)``.
        if config is None:
            return self.connection_config
        return dataclasses.replace(config, ice=self.connection_config.ice)

    async def _forget_answerer(self, conn: DurableConnection) -> None:
        entry = self._answerers.pop(conn.connection_id, None)
        if entry is not None:
            await entry[1].aclose()

    def _runner(self, machine: Any, on_event: Callable[[ev.Event], None]) -> MachineRunner:
        return MachineRunner(
            machine,
            rpc=self.api.rpc,
            on_event=on_event,
            host_addresses=self.host_addresses,
        )

    async def find_service(
        self,
        service_fqn: str,
        *,
        mode: DiscoveryMode | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> ServiceEntry | ServicePage:
        """Discover services without connecting: ``direct`` with ``@user``
        (auto-detected), ``random`` without, or ``paginated`` (one offer per provider,
        ``limit``/``offset``).

        Raises `RpcError` when the server refuses (``Service not found``...) and
        `TransportError` when it cannot be reached.
        """
        if mode is None:
            mode = discovery_mode(service_fqn)
        if mode == "paginated":
            return await self.api.get_service(service_fqn, limit=limit, offset=offset)
        return await self.api.get_service(service_fqn)

    # -- offerer side --------------------------------------------------------------------

    def publish_service(
        self,
        service: str,
        *,
        max_offers: int = 1,
        ttl_ms: int = 300_000,
        poll_interval_ms: int = 1000,
        connection_config: ConnectionConfig | None = None,
        channel_options: DataChannelOptions | None = None,
    ) -> None:
        """Describe the service to publish (no network I/O; `start_filling` publishes).

        ``service`` is ``name:version`` (our username is appended).  ``max_offers``
        unanswered offers are kept published at all times; ``channel_options`` sets the
        data channel's reliability (the 0.18.9 custom offer factory's use).
        ``poll_interval_ms`` spaces the polls that collect answers (0.18.9: 1000), so
        it bounds how long an answering peer waits for us.  ``connection_config``
        overrides the client's for the pool's connections, except the ICE servers,
        which are always the client's (``Rondevu.connect(ice_servers=...)``).

        Raises `ValidationError` for a malformed service name or one that names another
        user, and `UsageError` while a service is already being served.
        """
        if self._pool is not None and self._pool.machine.state is not PoolState.CLOSED:
            raise UsageError("a service is already being served; stop_filling() first")
        fqn = validate_service_fqn(service)
        if fqn.username not in (None, self.username):
            raise ValidationError("Service FQN username must match authenticated username")
        connection = self._with_client_ice(connection_config)
        if channel_options is not None:
            connection = dataclasses.replace(connection, data_channel=channel_options)
        self._published = PoolConfig(
            service=fqn.with_username(self.username),
            max_offers=max_offers,
            ttl_ms=ttl_ms,
            poll_interval_ms=poll_interval_ms,
            connection=connection,
        )

    async def start_filling(self, *, timeout: float | None = 30.0) -> None:  # noqa: ASYNC109
        """Publish the offers, returning once they are on the server (as 0.18.9 awaits
        its first fill); the pool then stays full until `stop_filling`.

        Raises `RpcError` if that first publication fails (the pool keeps retrying with
        backoff until `stop_filling`), `TimeoutError` after ``timeout`` seconds.
        """
        if self._published is None:
            raise UsageError("No service published. Call publish_service() first.")
        if self._pool is not None and self._pool.machine.state is PoolState.FILLING:
            return
        if self._pool is None or self._pool.machine.state is PoolState.CLOSED:
            published = self._published
            self._require_running()
            connection = await self._machine_config(published.connection)
            config = dataclasses.replace(published, connection=connection)
            machine = OfferPool(config, unit_random=self._unit_random)
            self._pool = _Pool(machine, self._runner(machine, self._on_pool_event))
            await self._start(self._pool.runner)
        pool = self._pool
        pool.first_publication = anyio.Event()
        pool.runner.feed(StartFilling(now=pool.runner.clock()))
        with anyio.fail_after(timeout if timeout is not None else math.inf):
            await pool.first_publication.wait()
        if self._closed:
            raise ClientClosedError("the client closed before the offers were published")
        if pool.publish_error is not None:
            raise await self.explain_refusal(Method.PUBLISH_SERVICE, pool.publish_error)

    async def explain_refusal(self, method: Method, message: str) -> RpcError:
        """The exception for the server's refusal ``message`` of ``method``: a
        `UsernameTakenError` when it refused our identity and ``getUser`` confirms the
        name is held by another key, else an `RpcError` (check its ``permanent``)."""
        error = RpcError(method, message)
        if error.kind is not ErrorKind.IDENTITY:
            return error
        try:
            user = await self.api.get_user(self.username)
        except RondevuError:
            return error  # cannot confirm: report what the server said
        if not user.available and getattr(user, "public_key", None) != self.public_key:
            return UsernameTakenError(method, message, self.username)
        return error

    async def stop_filling(self) -> None:
        """Stop publishing and close every connection the pool made (0.18.9 semantics)."""
        if self._pool is not None and self._pool.machine.state is PoolState.FILLING:
            self._pool.runner.feed(StopFilling(now=self._pool.runner.clock()))

    async def delete_service(self) -> None:
        """Stop filling and delete the published service from the server.

        Raises `UsageError` when nothing was published, `RpcError` or `TransportError`
        when the server refuses or cannot be reached (a service already gone is fine).
        """
        if self._published is None:
            raise UsageError("No service published. Call publish_service() first.")
        await self.stop_filling()
        try:
            await self.api.delete_service(str(self._published.service))
        except RpcError as error:
            if "not found" not in error.message:
                raise

    def _on_pool_event(self, event: ev.Event) -> None:
        pool = self._pool
        assert pool is not None
        if event.connection_id == 0:
            first = not pool.first_publication.is_set()
            if first and isinstance(event, ev.OffersPublished | ev.PublishFailed):
                pool.publish_error = event.error if isinstance(event, ev.PublishFailed) else None
                pool.first_publication.set()
            self._emit(event.name, event)
            return
        conn = pool.connections.get(event.connection_id)
        if conn is None:
            conn = DurableConnection(
                runner=pool.runner,
                connection_id=event.connection_id,
                role="offerer",
                service_fqn=str(pool.machine.config.service),
                inbox_size=self.inbox_size,
                inbox_bytes=self.inbox_bytes,
            )
            pool.connections[event.connection_id] = conn
        conn.dispatch(event)
        if isinstance(event, ev.OfferCreated):
            conn.offer_id = event.offer_id
            self._emit(event.name, event)
        elif isinstance(event, ev.ConnectionOpened):
            conn.offer_id = event.offer_id
            pool.opened.add(event.connection_id)
            self._emit(event.name, IncomingConnection(offer_id=event.offer_id, connection=conn))
            self._queue_incoming(conn)
        elif isinstance(event, ev.Closed):
            pool.connections.pop(event.connection_id, None)
            pool.opened.discard(event.connection_id)

    # -- status ---------------------------------------------------------------------------

    def get_service_status(self) -> ServiceStatus:
        """The published service's pool at a glance."""
        pool, config = self._pool, self._published
        filling = pool is not None and pool.machine.state is PoolState.FILLING
        return ServiceStatus(
            active=filling,
            offer_count=len(pool.machine.unanswered()) if pool is not None else 0,
            max_offers=config.max_offers if config is not None else 0,
            filling=filling,
        )

    @property
    def active_connections(self) -> list[DurableConnection]:
        """Every open connection: answerer ones and those peers opened to our offers."""
        conns = [conn for conn, _ in self._answerers.values() if not conn.closed]
        if self._pool is not None:
            conns += [
                c
                for i, c in self._pool.connections.items()
                if i in self._pool.opened and not c.closed
            ]
        return conns

    def is_connected(self, offer_id: str) -> bool:
        """True when the connection made from ``offer_id`` is connected now."""
        return any(c.offer_id == offer_id and c.is_connected for c in self.active_connections)

    async def disconnect_all(self) -> None:
        """Close every connection (the pool keeps filling if it was)."""
        for conn in self.active_connections:
            await conn.close("disconnect_all")


async def _await(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("async listener failed")
