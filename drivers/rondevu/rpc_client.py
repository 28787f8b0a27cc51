"""`RpcClient`: runs the pure RPC batcher (`rondevu_core.batcher`) under anyio.

Role: sign each call, let the batcher decide when bodies go out and what they hold, send
them through a `SignalingTransport`, and hand every caller its own call's outcome (B9).
Nothing here decides protocol: grouping, timing and per-call settlement are the
batcher's rules; this module only performs its actions and keeps its clock.

Two clocks, kept apart and both injectable:

- ``wall_clock`` (Unix ms) is read once per call, at submission, for the signed
  ``message`` (§4): the server checks it against its own clock (±5 minutes).
- ``clock`` (monotonic ms, default: the event loop's clock) drives the batcher's
  deadlines.  A wall clock would stall or rush the batcher when the system time jumps.
  An injected ``clock`` must run at the event loop's pace, as the timer sleeps in real
  time for the difference.

Tasks: one timer task (a `DriveLoop`, the runtime's loop), asleep until the batcher's
next deadline or until a call may have moved it, plus one task per body in flight
(several may be in flight, as in the original; a held call's body, a long poll, is one
of them, so urgent calls go out beside it on another connection of the transport).
A body the batcher abandons (`AbortBatch`: its one held call was withdrawn) has its
task cancelled, which closes its HTTP request; the server then stops holding it.  They
all live in a task group owned by the client, so the client is used as
``async with RpcClient(...) as rpc:``.

Invariants: every awaiting caller is woken exactly once, by its own outcome or by
`ClientClosedError`; after `aclose` returns, no task of the client runs, no call is
pending and the transport is closed.  If the client's tasks end without `aclose` (the
scope that entered the client was cancelled), the pending calls fail the same way and a
later `call` raises `ClientClosedError` at once: nothing is ever started on a task group
that is gone.  A caller cancelled while waiting withdraws its call if it is still queued
(it never reaches the server); a call already sent cannot be taken back, so it
completes and its outcome is dropped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup, TaskStatus

from rondevu.drive import DriveLoop
from rondevu.errors import ClientClosedError, TransportError, UsageError
from rondevu.transport import SignalingTransport
from rondevu_core.batcher import (
    AbortBatch,
    BatcherOptions,
    BatchFailed,
    BatchReply,
    BatchResult,
    BatchSent,
    CallSettled,
    CloseBatcher,
    RpcBatcher,
    SendBatch,
    SubmitCall,
    WithdrawCall,
)
from rondevu_core.rpc import RpcOk, RpcOutcome, RpcRequest, envelope
from rondevu_core.rules.signing import KeyPair

__all__ = ["RpcClient", "loop_clock_ms", "wall_clock_ms"]

log = logging.getLogger("rondevu.rpc")


def wall_clock_ms() -> int:
    """Unix time in ms, as JavaScript's ``Date.now()`` (for signatures)."""
    return time.time_ns() // 1_000_000


def loop_clock_ms() -> int:
    """The running event loop's monotonic clock in ms (for the batcher's deadlines)."""
    return math.floor(anyio.current_time() * 1000)


class _Pending:
    """One caller waiting for its call: woken once, by an outcome or by closing."""

    __slots__ = ("closed", "done", "outcome")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.outcome: RpcOutcome | None = None
        self.closed = False


class RpcClient:
    """Signed, batched RPC calls over one transport, as one identity.

    ``batching`` is True for the 0.18.9 defaults (at most 10 calls a body, 50 ms wait,
    10 ms between bodies), False to send every call alone as a single object, or a
    `BatcherOptions`.  The client owns ``transport`` and closes it in `aclose`.
    """

    def __init__(
        self,
        transport: SignalingTransport,
        *,
        username: str,
        keypair: KeyPair,
        batching: bool | BatcherOptions = True,
        wall_clock: Callable[[], int] = wall_clock_ms,
        clock: Callable[[], int] = loop_clock_ms,
    ) -> None:
        if isinstance(batching, BatcherOptions):
            options = batching
        else:
            options = BatcherOptions(enabled=batching)
        self.transport = transport
        self.username = username
        self.keypair = keypair
        self._wall_clock = wall_clock
        self._clock = clock
        self._batcher = RpcBatcher(options)
        self._pending: dict[int, _Pending] = {}
        self._bodies: dict[int, dict[str, Any]] = {}  # signed call objects not yet sent
        self._sending: dict[int, anyio.CancelScope] = {}  # bodies in flight, by batch id
        self._requests = 0
        self._exit_stack: AsyncExitStack | None = None
        self._tasks: TaskGroup | None = None
        self._stopped = anyio.Event()  # set once the client's task group has exited
        self._timer = DriveLoop(self._batcher, clock=clock, drain=self._drain)
        self._closed = False
        self._transport_closed = False

    @property
    def options(self) -> BatcherOptions:
        """The batching rules in force."""
        return self._batcher.options

    @property
    def queued(self) -> int:
        """Calls waiting for their body to go out."""
        return self._batcher.queued

    @property
    def in_flight(self) -> int:
        """Calls sent and waiting for the reply."""
        return self._batcher.in_flight

    @property
    def requests_sent(self) -> int:
        """How many bodies (HTTP requests, for `HttpTransport`) this client has sent."""
        return self._requests

    @property
    def closed(self) -> bool:
        """True once `aclose` has begun."""
        return self._closed

    # -- lifetime ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._exit_stack is not None or self._closed:
            raise UsageError("an RpcClient can be entered only once")
        async with AsyncExitStack() as stack:
            outer = await stack.enter_async_context(anyio.create_task_group())
            await outer.start(self._supervise)
            self._exit_stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            await self.aclose()
        finally:
            assert self._exit_stack is not None
            await self._exit_stack.__aexit__(exc_type, exc, tb)
        return None

    async def aclose(self) -> None:
        """Fail every pending call with `ClientClosedError`, stop all tasks, close the
        transport.  Idempotent; safe to call from any task of the client's loop.
        """
        if not self._closed:
            self._closed = True
            log.debug(
                "closing: %d queued, %d in flight", self._batcher.queued, self._batcher.in_flight
            )
            self._batcher.handle(CloseBatcher(now=self._clock()))
            self._drain(closing=True)
            self._bodies.clear()
            if self._tasks is not None:
                self._tasks.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            if self._tasks is not None:
                await self._stopped.wait()
            if not self._transport_closed:
                self._transport_closed = True
                await self.transport.aclose()

    async def _supervise(self, *, task_status: TaskStatus[None]) -> None:
        # Its own task group, so aclose() cancels the client's tasks and never the
        # task that entered the client.
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                tasks.start_soon(self._timer.run, name="rondevu rpc timer")
                task_status.started()
        finally:
            self._stopped.set()
            if not self._closed:
                # Cancelled from outside, before aclose: no task can send any more, so
                # settle every call now rather than leave its caller waiting forever.
                self._batcher.handle(CloseBatcher(now=self._clock()))
                self._drain(closing=True)
                self._bodies.clear()

    # -- calls ---------------------------------------------------------------------

    async def call(self, request: RpcRequest) -> RpcOutcome:
        """Sign ``request`` now, queue it, and wait for its own outcome.

        Returns `RpcOk` or the server's or transport's `RpcFailed`.  Raises
        `ClientClosedError` if the client is (or gets) closed first, `UsageError` if it
        was never entered.
        """
        if self._closed or self._stopped.is_set():
            raise ClientClosedError("Client is closed")
        if self._tasks is None:
            raise UsageError("RpcClient must be entered first: 'async with RpcClient(...)'")
        body = envelope(
            request, username=self.username, keypair=self.keypair, now_ms=self._wall_clock()
        )
        pending = _Pending()
        call_id = self._batcher.free_call_id()
        self._batcher.handle(SubmitCall(now=self._clock(), call_id=call_id, request=request))
        self._pending[call_id] = pending
        self._bodies[call_id] = body
        log.debug("call %d: %s queued", call_id, request.method.value)
        self._drain()
        try:
            await pending.done.wait()
        except anyio.get_cancelled_exc_class():
            # Nobody waits for this call any more: if it has not gone out, it never will.
            if not pending.done.is_set():
                self._batcher.handle(WithdrawCall(now=self._clock(), call_id=call_id))
                self._drain()
            raise
        if pending.closed:
            raise ClientClosedError("Client closed before the call completed")
        assert pending.outcome is not None
        return pending.outcome

    async def send_last(self, request: RpcRequest) -> None:
        """Send ``request`` on its own, from the calling task, and forget the reply.

        For the calls that must leave even when the client's tasks are gone (a scope
        around the client was cancelled before it closed): a publisher withdrawing its
        offers on its way out.  Best effort: a transport failure is logged, not raised;
        the caller bounds the wait.  Raises `ClientClosedError` once the transport is
        closed."""
        if self._transport_closed:
            raise ClientClosedError("Client is closed")
        body = envelope(
            request, username=self.username, keypair=self.keypair, now_ms=self._wall_clock()
        )
        try:
            await self.transport.send(body)
        except TransportError as error:
            log.debug("%s (sent last): %s", request.method.value, error)

    # -- driving the batcher ---------------------------------------------------------

    def _drain(self, *, closing: bool = False) -> None:
        """Perform every action the batcher asks for and settle every finished call."""
        while (action := self._batcher.next_action()) is not None:
            if isinstance(action, SendBatch):
                assert self._tasks is not None
                # The scope exists before the task runs, so an abort can never miss it.
                scope = self._sending[action.batch_id] = anyio.CancelScope()
                self._tasks.start_soon(
                    self._send, action, scope, name=f"rondevu rpc batch {action.batch_id}"
                )
            elif isinstance(action, AbortBatch):
                aborted = self._sending.pop(action.batch_id, None)
                if aborted is not None:
                    aborted.cancel()
        while (event := self._batcher.next_event()) is not None:
            if isinstance(event, CallSettled):
                self._settle(event, closing=closing)
        self._timer.poke()  # the next deadline may have moved

    def _settle(self, event: CallSettled, *, closing: bool) -> None:
        self._bodies.pop(event.call_id, None)
        pending = self._pending.pop(event.call_id, None)
        outcome = event.outcome
        if isinstance(outcome, RpcOk):
            log.debug("call %d: ok", event.call_id)
        elif not closing:
            log.debug(
                "call %d: failed (transport=%s): %s",
                event.call_id,
                outcome.transport,
                outcome.error,
            )
        if pending is None:
            return
        pending.outcome = outcome
        pending.closed = closing
        pending.done.set()

    async def _send(self, action: SendBatch, scope: anyio.CancelScope) -> None:
        # Popped even when aborted before this task ran: settling forgot them already.
        bodies = [self._bodies.pop(call.call_id, None) for call in action.calls]
        payload: Any = bodies if action.as_array else bodies[0]
        log.debug(
            "batch %d: sending %d call(s) as %s",
            action.batch_id,
            len(bodies),
            "array" if action.as_array else "object",
        )
        result: BatchResult | None = None
        with scope:
            if scope.cancel_called:
                return  # abandoned before it left
            self._requests += 1
            try:
                result = BatchReply(body=await self.transport.send(payload))
            except TransportError as error:
                result = BatchFailed(error=str(error))
            except Exception as error:  # a faulty transport must not strand the calls
                log.exception("batch %d: transport raised", action.batch_id)
                result = BatchFailed(error=f"Transport failed: {type(error).__name__}")
        self._sending.pop(action.batch_id, None)
        if result is None:
            log.debug("batch %d: abandoned", action.batch_id)
            return  # AbortBatch: the batcher settled its call and expects nothing more
        if isinstance(result, BatchFailed):
            log.debug("batch %d: %s", action.batch_id, result.error)
        self._batcher.handle(BatchSent(now=self._clock(), batch_id=action.batch_id, result=result))
        self._drain()
