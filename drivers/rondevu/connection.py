"""`DurableConnection`: the application's handle on one durable peer connection.

It is a view: the state machine (`rondevu_core.connection.Connection`) decides
everything, a `rondevu.runtime.MachineRunner` performs the I/O, and this object turns
the machine's events into what a Python application consumes:

- callbacks: ``conn.on("message", fn)`` with the 0.18.9 event names, each
  callback receiving the event dataclass;
- iteration: ``async for data in conn`` yields received messages, ``conn.events()``
  yields every event;
- ``await conn.wait_connected(timeout)``, ``conn.send(data)``, ``await conn.close()``.

Messages that arrive before anyone iterates are kept in an inbox, so nothing received
is lost to a late reader.  The inbox is bounded by ``inbox_size`` messages and
``inbox_bytes`` bytes (a peer may send 256 KiB messages as fast as it likes); when full,
the oldest is dropped with a warning and a ``message:undelivered`` event carrying it.
An application that listens with ``on("message")`` and has never called `receive` or
iterated gets each message through its listeners only: nothing is kept for a reader
that never comes.

Flow control: `send` never waits; with the session layer it raises `WindowFullError`
(or reports ``message:undelivered``, as configured) when the unacknowledged window is
full.  `send_wait` waits instead: for room in the window, then for the data channel's
``bufferedAmount`` to fall to its low threshold, so a fast sender holds at most a window
plus the threshold in memory.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rondevu.errors import UsernameTakenError
from rondevu_core import events as ev
from rondevu_core.buffer import Payload
from rondevu_core.connection import Connection
from rondevu_core.errors import RondevuError, UsageError
from rondevu_core.inputs import Close, PauseReconnect, ResumeReconnect, SendMessage
from rondevu_core.pool import OfferPool
from rondevu_core.rpc import Method

if TYPE_CHECKING:
    from rondevu.runtime import MachineRunner

__all__ = [
    "ConnectionClosedError",
    "ConnectionFailedError",
    "DurableConnection",
    "EventCallback",
]

logger = logging.getLogger("rondevu.connection")

EventCallback = Callable[[ev.Event], Any]
"""A listener: called with the event; may return an awaitable, which is run as a task."""

DEFAULT_INBOX_SIZE = 10_000
DEFAULT_INBOX_BYTES = 16 * 1024 * 1024
SEND_LOW_WATER = 1024 * 1024
"""`send_wait` waits while the data channel holds more than this many bytes."""


class ConnectionClosedError(RondevuError):
    """The connection is closed (by the application or for good after failures)."""


class ConnectionFailedError(RondevuError):
    """The connection failed and will not reconnect (reconnection off or exhausted)."""


class DurableConnection:
    """One connection to a peer that survives the loss of its link.

    `rondevu.Rondevu` creates it (``connect_to_service`` on the connecting side,
    ``incoming()`` and ``connection:opened`` on the publishing side); applications do
    not construct it.  When the link drops it reconnects by itself (a new peer
    connection, a fresh offer) and replays the messages sent meanwhile::

        conn.send("hello")                    # str or bytes; kept while not connected
        await conn.wait_connected(timeout=30)
        async for message in conn:            # each str or bytes, as the peer sent it
            print(message)
        await conn.close()

    ``conn.on(name, callback)`` listens to its events (``connected``, ``disconnected``,
    ``reconnect:scheduled``, ``message``...: the 0.18.9 names) and `events` iterates
    over them.  Messages nobody reads wait in a bounded inbox, the oldest dropped first
    with a warning.  `ConnectionClosedError` is raised by calls after `close`, and
    `ConnectionFailedError` once it has given up reconnecting.
    """

    def __init__(
        self,
        *,
        runner: MachineRunner,
        connection_id: int,
        role: str,
        service_fqn: str,
        inbox_size: int = DEFAULT_INBOX_SIZE,
        inbox_bytes: int = DEFAULT_INBOX_BYTES,
        on_closed: Callable[[DurableConnection], Awaitable[None]] | None = None,
        explain_refusal: Callable[[Method, str], Awaitable[Exception]] | None = None,
    ) -> None:
        self._runner = runner
        self.connection_id = connection_id
        """The machine's id of this connection (unique within its `Rondevu`)."""
        self.role = role
        """``"offerer"`` or ``"answerer"``."""
        self.service_fqn = service_fqn
        """The service this connection belongs to."""
        self.offer_id: str | None = None
        """The offer this connection was made from (set once known)."""
        self.peer_username: str | None = None
        """The other side's username (set once known; an answerer's is the provider)."""
        self._state = "initializing"
        self._listeners: dict[str, list[EventCallback]] = {}
        self._streams: list[MemoryObjectSendStream[ev.Event]] = []
        self._inbox: deque[Payload] = deque()
        self._inbox_size = inbox_size
        self._inbox_bytes = inbox_bytes
        self._inbox_used = 0
        self._inbox_overflowing = False
        self._reading = False
        self._inbox_changed = anyio.Event()
        self._state_changed = anyio.Event()
        self._room_changed = anyio.Event()
        self._closed_reason: str | None = None
        self._gave_up: str | None = None
        # A refusal of our identity (``error:permanent``, kind ``identity``): the call
        # and what the server said, for `explain_refusal` to turn into a typed error.
        self._refusal: tuple[Method, str] | None = None
        self._explain_refusal = explain_refusal
        self._on_closed = on_closed

    # -- state ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The current state name (the 0.18.9 names): ``initializing`` … ``connected``
        … ``closed``."""
        return self._state

    @property
    def is_connected(self) -> bool:
        """True while messages flow directly (ICE connected and data channel open)."""
        return self._state == "connected"

    @property
    def unread(self) -> int:
        """Received messages waiting in the inbox for `receive` or iteration."""
        return len(self._inbox)

    @property
    def closed(self) -> bool:
        """True once the connection reached ``closed``."""
        return self._state == "closed"

    @property
    def peer_connection(self) -> Any:
        """The current aiortc ``RTCPeerConnection``, or None between attempts.

        Raw access bypasses durability: the object is replaced on every reconnection and
        anything done to it directly is invisible to the state machine.
        """
        peer = self._current_peer()
        return None if peer is None else peer.raw_peer_connection

    @property
    def data_channel(self) -> Any:
        """The current aiortc ``RTCDataChannel``, or None (same caveats as above)."""
        peer, core = self._current_peer(), self._core()
        channel = None if core is None else core.channel
        return None if peer is None or channel is None else peer.raw_channel(channel)

    @property
    def session_id(self) -> str | None:
        """The id of the session layer's session with the peer (docs/session-layer.md),
        shared by both ends and kept across reconnections; None while none is agreed (a
        peer that does not speak the layer, or before the first link)."""
        core = self._core()
        return None if core is None else core.session_token

    def _core(self) -> Connection | None:
        """The core machine of this connection (its own, or its pool's entry)."""
        machine = self._runner.machine
        if isinstance(machine, OfferPool):
            return machine.connections.get(self.connection_id)
        assert isinstance(machine, Connection)
        return machine

    def _current_peer(self) -> Any:
        core = self._core()
        pc_id = None if core is None else core.pc_id
        return None if pc_id is None else self._runner.peers.peer(pc_id)

    # -- commands ---------------------------------------------------------------------

    def send(self, data: Payload) -> None:
        """Send ``data`` (str or bytes); buffered and replayed if not connected now.

        Raises `ConnectionClosedError` after the connection closed,
        `ConnectionFailedError` once it gave up reconnecting, `UsageError` when it is
        down and buffering is disabled, `TypeError` for anything but str or bytes.
        """
        if not isinstance(data, str | bytes):
            raise TypeError("send() takes str or bytes")
        if self.closed:
            raise ConnectionClosedError("send on a closed connection")
        try:
            self._runner.feed(
                SendMessage(now=self._runner.clock(), data=data, connection_id=self.connection_id)
            )
        except UsageError as exc:
            if self.closed or self._core() is None:
                raise ConnectionClosedError(str(exc)) from exc
            if self._gave_up is not None:
                raise ConnectionFailedError(str(exc)) from exc
            raise

    async def send_wait(self, data: Payload, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Send ``data`` once there is room: in the session window and in the channel.

        Waits while the unacknowledged window is full (the peer's acknowledgements make
        room; a lost link keeps it full until the session resumes) and while the open
        data channel holds more than ``SEND_LOW_WATER`` bytes.  `TimeoutError` after
        ``timeout`` seconds; otherwise raises what `send` raises.
        """
        if not isinstance(data, str | bytes):
            raise TypeError("send_wait() takes str or bytes")
        size = len(data.encode()) if isinstance(data, str) else len(data)
        with anyio.fail_after(timeout if timeout is not None else math.inf):
            while True:
                if self.closed:
                    raise ConnectionClosedError("send on a closed connection")
                if self._gave_up is not None:
                    raise ConnectionFailedError(self._gave_up)
                core = self._core()
                if core is None or core.can_send(size):
                    break
                await self._room_changed.wait()
            await self._channel_low()
            self.send(data)

    async def wait_acked(self) -> None:
        """Return once the peer acknowledged everything sent (at once without the
        session layer, which has no acknowledgements), or the connection ended."""
        while not self.closed and self._gave_up is None:
            core = self._core()
            delivery = None if core is None else core.delivery
            if delivery is None or delivery.unacked_messages == 0:
                return
            await self._room_changed.wait()

    async def _channel_low(self) -> None:
        """Wait until the current data channel's outgoing buffer is at most the low
        threshold (aiortc's ``bufferedamountlow`` event), or it is gone."""
        channel = self.data_channel
        if channel is None or channel.bufferedAmount <= SEND_LOW_WATER:
            return
        low = anyio.Event()
        channel.bufferedAmountLowThreshold = SEND_LOW_WATER
        channel.once("bufferedamountlow", low.set)
        channel.once("close", low.set)
        try:
            while channel.bufferedAmount > SEND_LOW_WATER and channel.readyState == "open":
                with anyio.move_on_after(0.25):  # a close may come without the event
                    await low.wait()
        finally:
            for name in ("bufferedamountlow", "close"):
                with contextlib.suppress(KeyError):
                    channel.remove_listener(name, low.set)

    def pause_reconnect(self) -> None:
        """Hold reconnection: a lost link waits (no attempt scheduled) until
        `resume_reconnect`.  Raises `ConnectionClosedError` after close."""
        self._command(PauseReconnect)

    def resume_reconnect(self) -> None:
        """Allow reconnection again; a reconnection held by `pause_reconnect` starts now."""
        self._command(ResumeReconnect)

    def _command(self, command: type[PauseReconnect | ResumeReconnect]) -> None:
        if self.closed:
            raise ConnectionClosedError("the connection is closed")
        try:
            self._runner.feed(command(now=self._runner.clock(), connection_id=self.connection_id))
        except UsageError as exc:
            raise ConnectionClosedError(str(exc)) from exc

    async def close(self, reason: str = "Closed by application") -> None:
        """Close for good: stops reconnection, closes the peer connection; idempotent."""
        if not self.closed:
            self._runner.feed(
                Close(now=self._runner.clock(), reason=reason, connection_id=self.connection_id)
            )
        if self._on_closed is not None:
            callback, self._on_closed = self._on_closed, None
            await callback(self)

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until ``connected``; `TimeoutError` after ``timeout`` seconds.

        Raises `ConnectionClosedError` if the connection closes first, and
        `ConnectionFailedError` once it has given up reconnecting - or, when the server
        refused our identity and the name is held by another key, `UsernameTakenError`
        (such a refusal is never retried).
        """
        with anyio.fail_after(timeout if timeout is not None else math.inf):
            while not self.is_connected:
                if self.closed:
                    raise ConnectionClosedError(self._closed_reason or "connection closed")
                if self._gave_up is not None:
                    raise await self._failure()
                await self._state_changed.wait()

    async def _failure(self) -> Exception:
        """Why the connection gave up: `UsernameTakenError` when the server refused our
        identity and the client confirmed the name is another key's, else
        `ConnectionFailedError`."""
        failed = ConnectionFailedError(self._gave_up or "connection failed")
        if self._refusal is None or self._explain_refusal is None:
            return failed
        explained = await self._explain_refusal(*self._refusal)
        return explained if isinstance(explained, UsernameTakenError) else failed

    # -- events -----------------------------------------------------------------------

    def on(self, name: str, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event named ``name``; ``"*"`` for all.

        Returns a function that removes the listener.  A coroutine function is run as
        a task of the client.  The names are the 0.18.9 ones (``connected``,
        ``message``, ``reconnect:scheduled``, …; see ``rondevu_core.events``).
        """
        self._listeners.setdefault(name, []).append(callback)

        def off() -> None:
            listeners = self._listeners.get(name, [])
            if callback in listeners:
                listeners.remove(callback)

        return off

    def events(self) -> AsyncIterator[ev.Event]:
        """Every event from this call on, until the connection closes (``closed`` included).

        Collection starts here, not at the first iteration, so nothing emitted between
        ``it = conn.events()`` and ``await anext(it)`` is missed.
        """
        send, receive = anyio.create_memory_object_stream[ev.Event](max_buffer_size=math.inf)
        self._streams.append(send)
        if self.closed:
            send.close()
        return self._iterate_events(send, receive)

    async def _iterate_events(
        self,
        send: MemoryObjectSendStream[ev.Event],
        receive: MemoryObjectReceiveStream[ev.Event],
    ) -> AsyncIterator[ev.Event]:
        try:
            async with receive:
                async for event in receive:
                    yield event
        finally:
            if send in self._streams:
                self._streams.remove(send)

    async def receive(self) -> Payload:
        """The next received message; raises `ConnectionClosedError` once closed and empty."""
        self._reading = True
        while not self._inbox:
            if self.closed:
                raise ConnectionClosedError(self._closed_reason or "connection closed")
            await self._inbox_changed.wait()
        return self._take()

    def _take(self) -> Payload:
        data = self._inbox.popleft()
        self._inbox_used -= len(data)
        if not self._inbox:
            self._inbox_overflowing = False
        return data

    def _keep(self, data: Payload) -> None:
        """Queue ``data`` for a reader, dropping the oldest while over either bound."""
        self._inbox.append(data)
        self._inbox_used += len(data)
        dropped: list[Payload] = []
        while len(self._inbox) > 1 and (
            len(self._inbox) > self._inbox_size or self._inbox_used > self._inbox_bytes
        ):
            dropped.append(self._take())
        if dropped and not self._inbox_overflowing:
            self._inbox_overflowing = True  # one warning per episode, not one per message
            logger.warning(
                "connection %d: inbox full (%d messages or %d bytes), dropping the oldest "
                "unread messages",
                self.connection_id,
                self._inbox_size,
                self._inbox_bytes,
            )
        if dropped:
            # Received (and, with the session layer, acknowledged) but never read: the
            # application hears about each one, as for every other message given up.
            self.dispatch(
                ev.MessagesUndelivered(
                    connection_id=self.connection_id,
                    messages=tuple(dropped),
                    reason="inbox full: received but not read in time",
                    maybe_delivered=True,
                )
            )
        self._notify_inbox()

    def __aiter__(self) -> AsyncIterator[Payload]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Payload]:
        while True:
            try:
                yield await self.receive()
            except ConnectionClosedError:
                return

    # -- fed by the client ------------------------------------------------------------

    def dispatch(self, event: ev.Event) -> None:
        """Deliver one machine event (called by `Rondevu`, on the event loop)."""
        match event:
            case ev.StateChanged(new=new):
                self._state = new
                self._notify_state()
            case ev.OfferFetched(offer_id=offer_id, username=username):
                # Kept after the attempt ends, like an offerer's.
                self.offer_id = offer_id
                if username is not None:
                    self.peer_username = username
            case ev.Message(data=data):
                if self._reading or not self._listeners.get("message"):
                    self._keep(data)
            case ev.AnswerProcessed(offer_id=offer_id, answerer_id=answerer):
                self.offer_id, self.peer_username = offer_id, answerer
            case ev.PermanentError(operation=operation, error=error, kind="identity"):
                with contextlib.suppress(ValueError):  # our own call names, always known
                    self._refusal = (Method(operation), error)
            case ev.Failed(error=error, final=True):
                self._gave_up = error
                self._notify_state()
            case ev.Closed(reason=reason):
                self._state = "closed"
                self._closed_reason = reason
                self._notify_state()
                self._notify_inbox()
            case ev.MessagesAcked():
                self._notify_room()
            case ev.ProtocolViolation(error=error):
                # What the peer or the stack sent that the machine could not use (a
                # frame it dropped, a report out of turn): visible without a listener.
                logger.warning("connection %d: %s", self.connection_id, error)
        for callback in (*self._listeners.get(event.name, ()), *self._listeners.get("*", ())):
            self._call(callback, event)
        for stream in list(self._streams):
            stream.send_nowait(event)
            if isinstance(event, ev.Closed):
                stream.close()

    # Waiters await the event current when they wait; a change sets it and installs a
    # fresh one.  (A waiter replacing the shared event itself would strand every other
    # waiter on the old one, which nothing sets any more.)
    def _notify_state(self) -> None:
        self._state_changed.set()
        self._state_changed = anyio.Event()
        self._notify_room()

    def _notify_room(self) -> None:
        self._room_changed.set()
        self._room_changed = anyio.Event()

    def _notify_inbox(self) -> None:
        self._inbox_changed.set()
        self._inbox_changed = anyio.Event()

    def _call(self, callback: EventCallback, event: ev.Event) -> None:
        try:
            result = callback(event)
        except Exception:
            logger.exception("listener for %s failed", event.name)
            return
        if isinstance(result, Awaitable):
            self._runner.spawn(_await_quietly, result, event.name)


async def _await_quietly(awaitable: Awaitable[Any], name: str) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("async listener for %s failed", name)
