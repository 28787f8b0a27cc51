"""The runtime driver: runs one sans-IO machine with real I/O on anyio (asyncio backend).

A `MachineRunner` owns one top-level machine (a `rondevu_core.connection.Connection` or a
`rondevu_core.pool.OfferPool`) and does three things, and nothing else:

1. **Executes its actions.**  `SendRpc` goes to an `RpcCaller` (the batching RPC client)
   and comes back as `RpcResult`; `CancelRpc` cancels that call's task (the RPC client
   then withdraws the call, or abandons its held request) and no result is fed;
   peer-connection actions go to a `PeerHost`, which runs each peer connection's
   operations strictly in order on one worker task.
2. **Keeps one timer** at the machine's ``get_timer()`` deadline and calls
   ``handle_timer(now)`` when it is due (the aioquic model).
3. **Feeds back** what happened - RPC outcomes, and the peer's reports, which the aiortc
   driver already gives as core inputs stamped with this runner's clock - and hands
   every machine event to ``on_event``.

It makes no protocol decision: when to call, what to retry, what counts as failure are
all the machine's.  Everything runs on the event loop thread, so feeding an input is a
plain synchronous call; the machine is never entered concurrently.

Two clocks, kept apart: ``clock`` (monotonic ms) gives every input its ``now`` and so
drives the machine's deadlines, which must not jump with the system time; ``wall_clock``
(Unix ms) stamps each RPC result's ``unix_ms``, the reference the machines check the
server's timestamps against.  Signatures use the RPC client's own wall clock.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rondevu.drive import DriveLoop
from rondevu.errors import ClientClosedError
from rondevu.rpc_client import wall_clock_ms
from rondevu_aiortc import AiortcPeer, PeerStateError, monotonic_ms
from rondevu_core import actions, inputs
from rondevu_core.events import Event
from rondevu_core.machine import Machine as CoreMachine
from rondevu_core.rpc import RpcFailed, RpcOutcome, RpcRequest

__all__ = ["Machine", "MachineRunner", "PeerHost", "RpcCaller", "monotonic_ms"]

logger = logging.getLogger("rondevu.runtime")

_CLOSE_MARGIN = 1.0
"""Seconds a closing worker may take beyond its linger for the actions queued before it."""


Machine = CoreMachine[inputs.Input, actions.Action, Event]
"""What the runner runs: a `Connection` or an `OfferPool` (the core's one contract)."""


class RpcCaller(Protocol):
    """Performs one signaling call; never raises for a failed call (returns RpcFailed).

    ``send_last(request)``, when the caller has it (`RpcClient` does), sends a call from
    the calling task when ``call`` can no longer run it (see `MachineRunner.aclose`)."""

    async def call(self, request: RpcRequest) -> RpcOutcome: ...


class _Peer:
    """One peer connection and its ordered operation queue."""

    __slots__ = ("finished", "inbox", "linger", "outbox", "peer")

    def __init__(self, peer: AiortcPeer) -> None:
        self.peer = peer
        self.linger = 0.0
        """Seconds its queued close may wait for sent messages to leave (see aclose)."""
        self.finished = anyio.Event()
        """Set when the worker has performed (or given up) every queued action."""
        # Unbounded: the machine bounds what it asks for (its own buffers), and a full
        # queue here would raise WouldBlock out of `feed` (into the application's
        # send()) after the machine already counted the action as done.
        send, receive = anyio.create_memory_object_stream[actions.PeerAction](
            max_buffer_size=math.inf
        )
        self.outbox: MemoryObjectSendStream[actions.PeerAction] = send
        self.inbox: MemoryObjectReceiveStream[actions.PeerAction] = receive


class PeerHost:
    """Executes peer-connection actions on aiortc, whose reports go to the machine as is.

    Each peer connection gets a worker task that performs its actions one after the
    other, because their order matters (a remote description before its candidates, a
    data channel before the offer).  ``host_addresses`` is passed to every `AiortcPeer`
    (``["127.0.0.1"]`` keeps all WebRTC traffic on loopback).
    """

    def __init__(
        self,
        *,
        feed: Callable[[inputs.Input], None],
        clock: Callable[[], int],
        host_addresses: Sequence[str] | None = None,
    ) -> None:
        self._feed = feed
        self._clock = clock
        self._host_addresses = host_addresses
        self._peers: dict[int, _Peer] = {}
        self._group: TaskGroup | None = None

    def bind(self, group: TaskGroup) -> None:
        """Run peer workers in ``group`` (the runner's task group)."""
        self._group = group

    def peer(self, pc_id: int) -> AiortcPeer | None:
        """The live aiortc wrapper of ``pc_id`` (raw access for the application)."""
        slot = self._peers.get(pc_id)
        return None if slot is None else slot.peer

    def execute(self, action: actions.PeerAction) -> None:
        """Queue ``action`` on its peer connection's worker."""
        if isinstance(action, actions.CreatePeerConnection):
            self._create(action)
            return
        slot = self._peers.get(action.pc_id)
        if slot is None:
            # The machine only names peer connections it created and has not closed.
            logger.warning("action for unknown peer connection %d dropped", action.pc_id)
            return
        try:
            slot.outbox.send_nowait(action)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The worker already stopped: the peer connection is closing or closed, so
            # the action is moot.  This runs inside aiortc's own event callbacks (close()
            # emits state changes synchronously); raising here would abort aiortc's close
            # half-way and leave every later close() waiting for ever.
            logger.debug("action for closing peer connection %d dropped", action.pc_id)
            return
        if isinstance(action, actions.ClosePeerConnection):
            slot.linger = action.linger_ms / 1000
            slot.outbox.close()

    def _create(self, action: actions.CreatePeerConnection) -> None:
        assert self._group is not None, "PeerHost.bind() first"
        pc_id = action.pc_id

        peer = AiortcPeer(
            ice=action.ice,
            on_input=self._feed,
            pc_id=pc_id,
            clock=self._clock,
            host_addresses=self._host_addresses,
        )
        slot = _Peer(peer)
        self._peers[pc_id] = slot
        self._group.start_soon(self._work, pc_id, slot)

    async def _work(self, pc_id: int, slot: _Peer) -> None:
        try:
            async with slot.inbox:
                async for action in slot.inbox:
                    await self._perform(pc_id, slot, action)
        finally:
            # Closing is idempotent; this also covers cancellation at shutdown.
            with anyio.CancelScope(shield=True):
                await slot.peer.close()
            self._peers.pop(pc_id, None)
            slot.finished.set()

    async def _perform(self, pc_id: int, slot: _Peer, action: actions.PeerAction) -> None:
        peer = slot.peer
        try:
            match action:
                case actions.CreateDataChannel(label=label, options=options):
                    peer.create_data_channel(
                        label,
                        ordered=options.ordered,
                        max_retransmits=options.max_retransmits,
                        max_packet_life_time=options.max_packet_life_time,
                        protocol=options.protocol,
                    )
                case actions.CreateOffer():
                    await peer.create_offer()
                case actions.CreateAnswer():
                    await peer.create_answer()
                case actions.SetRemoteDescription(type="offer", sdp=sdp):
                    await peer.set_remote_offer(sdp)  # reports how it went
                case actions.SetRemoteDescription(sdp=sdp):
                    await peer.set_remote_answer(sdp)
                case actions.AddRemoteCandidate(candidate=candidate):
                    await peer.add_remote_candidate(candidate)
                case actions.SendData(data=data, channel=channel):
                    peer.send(channel, data)
                case actions.ClosePeerConnection(linger_ms=linger_ms):
                    # Shielded: aiortc's close, once begun, must finish; cancelled midway
                    # it leaves the peer connection "closing" for ever and every later
                    # close (ours at shutdown included) waits on it without end.  The
                    # linger is bounded, so the shield is too.
                    with anyio.CancelScope(shield=True):
                        await peer.close(linger=linger_ms / 1000)
                case _:
                    raise PeerStateError(f"unsupported peer action {type(action).__name__}")
        except Exception as exc:
            # Whatever aiortc raises while performing an action fails that attempt (the
            # machine decides what follows); it must never take the runtime down.
            if not isinstance(exc, PeerStateError | RuntimeError | ValueError):
                logger.warning("pc %d: %s raised", pc_id, type(action).__name__, exc_info=exc)
            if not peer.closed:
                operation = type(action).__name__
                self._feed(
                    inputs.PeerError(
                        now=self._clock(), pc_id=pc_id, operation=operation, error=str(exc)
                    )
                )

    async def aclose(self) -> None:
        """Close every peer connection still open (shutdown path).

        A worker with a lingering close queued (an application close: messages it sent
        may still be leaving) gets that long, plus a little for the actions before it,
        to finish; then every peer connection is closed at once.
        """
        slots = list(self._peers.values())
        for slot in slots:
            slot.outbox.close()
        grace = max((slot.linger for slot in slots), default=0.0)
        if grace > 0:
            with anyio.CancelScope(shield=True), anyio.move_on_after(grace + _CLOSE_MARGIN):
                for slot in slots:
                    await slot.finished.wait()
        for slot in slots:
            with anyio.CancelScope(shield=True):
                await slot.peer.close()


class MachineRunner:
    """Runs one machine: executes actions, keeps its timer, feeds results back.

    Start `run` in a task group (``await group.start(runner.run)``); feed application
    commands with `feed`; stop by feeding the machine's own close input, then `aclose`.
    """

    def __init__(
        self,
        machine: Machine,
        *,
        rpc: RpcCaller,
        on_event: Callable[[Event], None],
        clock: Callable[[], int] = monotonic_ms,
        wall_clock: Callable[[], int] = wall_clock_ms,
        host_addresses: Sequence[str] | None = None,
    ) -> None:
        self.machine = machine
        self._rpc = rpc
        self._on_event = on_event
        self.clock = clock
        """Monotonic ms: every input's ``now`` (the machine's deadlines)."""
        self.wall_clock = wall_clock
        """Unix ms: each RPC result's ``unix_ms`` (checks of the server's timestamps)."""
        self.peers = PeerHost(
            feed=self.feed,
            clock=clock,
            host_addresses=host_addresses,
        )
        self._timer = DriveLoop(machine, clock=clock, drain=self._drain)
        self._group: TaskGroup | None = None
        self._backlog: list[inputs.Input] = []
        self._closed = False
        self._rpc_scopes: dict[int, anyio.CancelScope] = {}  # calls awaiting their outcome
        self.rpc_calls = 0
        """How many signaling calls this machine has asked for (for benchmarks)."""
        self._in_flight: dict[int, int] = {}  # call_id -> its number in rpc_calls order
        self._call_done = anyio.Event()
        # Calls that never reached the server because the RPC client or this runner's
        # tasks were gone: (number, request), for `aclose` to send on its way out.
        self._unsent: list[tuple[int, RpcRequest]] = []

    def feed(self, event: inputs.Input) -> None:
        """Give the machine one input, then perform what it asks."""
        if self._closed:
            return
        if self._group is None:
            self._backlog.append(event)
            return
        self.machine.handle(event)
        self._drain()

    def _drain(self) -> None:
        assert self._group is not None
        machine = self.machine
        while (action := machine.next_action()) is not None:
            if isinstance(action, actions.SendRpc):
                self.rpc_calls += 1
                self._in_flight[action.call_id] = self.rpc_calls
                scope = self._rpc_scopes[action.call_id] = anyio.CancelScope()
                self._group.start_soon(self._call, action, scope)
            elif isinstance(action, actions.CancelRpc):
                cancelled = self._rpc_scopes.pop(action.call_id, None)
                if cancelled is not None:
                    cancelled.cancel()
            elif isinstance(action, actions.PeerAction):
                self.peers.execute(action)
            else:
                logger.warning("unknown action %r dropped", action)
        while (event := machine.next_event()) is not None:
            try:
                self._on_event(event)
            except Exception:
                # The application's handler must not take the runtime down with it.
                logger.exception("event handler failed for %s", type(event).__name__)
        self._timer.poke()  # the deadline may have moved

    def spawn(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``func(*args)`` as a task of this runner (cancelled by `aclose`)."""
        if self._group is not None and not self._closed:
            self._group.start_soon(func, *args)

    async def _call(self, action: actions.SendRpc, scope: anyio.CancelScope) -> None:
        number = self._in_flight.get(action.call_id, 0)
        outcome: RpcOutcome | None = None
        try:
            with scope:
                try:
                    outcome = await self._rpc.call(action.request)
                except ClientClosedError as exc:  # shutting down: expected, not a bug
                    self._unsent.append((number, action.request))
                    outcome = RpcFailed(error=str(exc), transport=True)
                except Exception as exc:  # a caller bug; the machine must still hear back
                    logger.exception("rpc caller raised")
                    outcome = RpcFailed(
                        error=f"internal error: {type(exc).__name__}", transport=True
                    )
        except anyio.get_cancelled_exc_class():
            # This runner's tasks are being cancelled (CancelRpc's own scope absorbs its
            # cancellation): the call may never have left.
            self._unsent.append((number, action.request))
            raise
        finally:
            self._in_flight.pop(action.call_id, None)
            self._call_done.set()
            self._call_done = anyio.Event()
        self._rpc_scopes.pop(action.call_id, None)
        if outcome is None or scope.cancel_called:
            return  # CancelRpc: the machine asked never to hear of this call again
        self.feed(
            inputs.RpcResult(
                now=self.clock(),
                call_id=action.call_id,
                outcome=outcome,
                unix_ms=self.wall_clock(),
            )
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the machine until `aclose`: the timer loop plus every I/O task it spawns."""
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                self.peers.bind(group)
                for event in self._backlog:
                    self.machine.handle(event)
                self._backlog.clear()
                self._drain()
                task_status.started()
                await self._timer.run()
        finally:
            self._closed = True

    async def aclose(self, *, calls_after: int | None = None, grace: float = 0.0) -> None:
        """Stop: close every peer connection and cancel the remaining I/O tasks.

        With ``calls_after`` (a past value of `rpc_calls`), the calls the machine asked
        for since then - typically those its close input asked for, such as an offer
        pool withdrawing its offers - get up to ``grace`` seconds to be answered first.
        Bounded, so a server that is down cannot hold the exit."""
        if self._group is None or self._closed:
            self._closed = True
            return
        self._timer.stop()
        if calls_after is not None and grace > 0:
            with anyio.CancelScope(shield=True), anyio.move_on_after(grace):
                while any(n > calls_after for n in self._in_flight.values()):
                    await self._call_done.wait()
                # A scope around the client was cancelled first: those calls never ran.
                send_last = getattr(self._rpc, "send_last", None)
                for number, request in list(self._unsent):
                    if number > calls_after and send_last is not None:
                        with contextlib.suppress(ClientClosedError):
                            await send_last(request)
        self._closed = True
        await self.peers.aclose()
        self._group.cancel_scope.cancel()
