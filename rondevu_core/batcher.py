"""The RPC batcher as a pure state machine (docs/protocol.md §3; fixes B9 and B10).

Role: collect the calls a client makes and decide when each HTTP body goes out and what
it holds; the driver performs the POST and feeds the reply back.  The rules are those of
the 0.18.9 ``RpcBatcher`` with its two bugs removed:

- A call waits at most ``max_wait_ms`` after its submission; a queue that reaches
  ``max_batch_size`` is due at once.  Either way two sends are at least
  ``throttle_interval_ms`` apart (a due batch held back by the throttle arms the timer).
- Each call says how urgent it is (`rondevu_core.rpc.Urgency`, chosen by the machine
  that issues it).  An ``URGENT`` call (on a handshake's critical path) makes the queue
  due at once, throttle or not, when no request is in flight: waiting for companions
  that are not coming would only add ``max_wait_ms`` to the handshake.  While a request
  is in flight it waits as any call does, but no longer than that request: its reply
  makes the queue due.  A ``HELD`` call (one the server may hold, a long poll) goes
  out at once, alone in its own request, and never counts as in flight for that rule:
  sharing a request with it would hold its companions too.
- A batch takes up to ``max_batch_size`` calls from the head of the queue (urgent calls
  first when an urgent call is what makes it leave).  Whatever
  remains is due on its own schedule, so the timer is re-armed after every flush and no
  call is ever stranded (B10).
- Each call settles on *its own* item of the reply (B9): a failing sibling, even an
  earlier one, never changes another call's outcome.
- With ``enabled=False`` (the client's ``batching: false``) every call goes out alone, at
  once, as a single JSON object rather than an array, and no throttle applies.

Several batches may be in flight at once, as in the original: a flush never waits for
an earlier reply.  The server runs each HTTP request on its own, so callers whose calls
depend on each other submit the second only after the first has settled.

Remote misbehaviour never raises: a reply that is not an array, has the wrong length, or
holds an item that is not ``{"success": true, "result": …}`` /
``{"success": false, "error": "…"}`` settles the affected calls as
``RpcFailed(transport=True)`` with a message that says what was wrong.  Local misuse
(submitting after `CloseBatcher`, a reply for a batch never sent or already settled)
raises `UsageError` at the caller.

The batcher fulfils the core's one machine contract (`rondevu_core.machine`): inputs
(`SubmitCall`, `WithdrawCall`, `ClearQueue`, `BatchSent`, `CloseBatcher`) go through
`RpcBatcher.handle`, deadlines through `get_timer` / `handle_timer`, and output is drained
with `next_action` (`SendBatch`) and `next_event` (`CallSettled`).

A queued call can be withdrawn (`WithdrawCall`) when its caller stops waiting;
it then settles at once and never reaches the server.  A call already in a batch cannot
be taken back: the server may run it.  The exception is a held call in flight: it only
reads and sits alone in its request, so withdrawing it asks the driver to abandon that
request (`AbortBatch`, which also tells the server to stop holding it) and it settles
at once; the driver reports nothing more for that batch.

Invariants: every submitted call settles exactly once (a `CallSettled` event); after
`CloseBatcher` there is no timer, no further action, and every call has settled.
Time is the ``now`` argument (monotonic ms); the machine reads no clock.

Size.  About 500 lines, half of them this description and the batcher's own
vocabulary; the machine is one set of rules about a single queue, which reads best
whole.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rondevu_core.errors import UsageError
from rondevu_core.rpc import RpcFailed, RpcOk, RpcOutcome, RpcRequest, Urgency

__all__ = [
    "MAX_SERVER_BATCH",
    "AbortBatch",
    "BatchFailed",
    "BatchReply",
    "BatchResult",
    "BatchSent",
    "BatchedCall",
    "BatcherAction",
    "BatcherEvent",
    "BatcherInput",
    "BatcherOptions",
    "CallSettled",
    "ClearQueue",
    "CloseBatcher",
    "RpcBatcher",
    "SendBatch",
    "SubmitCall",
    "WithdrawCall",
    "outcome_of_item",
]

MAX_SERVER_BATCH = 100
"""The server refuses HTTP bodies with more calls than this (§3)."""

ERR_QUEUE_CLEARED = "Batch queue cleared"
ERR_WITHDRAWN = "Call withdrawn"
ERR_CLOSED_IN_FLIGHT = "Batcher closed before the server replied"
ERR_NOT_ARRAY = "Server returned invalid batch response (not an array)"
ERR_MALFORMED_ITEM = "Server returned a malformed reply for this call"


@dataclass(frozen=True, slots=True, kw_only=True)
class BatcherOptions:
    """How the batcher groups calls; the defaults are the 0.18.9 client's."""

    max_batch_size: int = 10
    """Most calls in one HTTP body (1 to `MAX_SERVER_BATCH`)."""
    max_wait_ms: int = 50
    """Longest a call waits in the queue for companions."""
    throttle_interval_ms: int = 10
    """Least time between two sends."""
    enabled: bool = True
    """False sends every call alone and at once, as a single object (``batching: false``)."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_size <= MAX_SERVER_BATCH:
            raise ValueError(f"max_batch_size must be 1 to {MAX_SERVER_BATCH}")
        if self.max_wait_ms < 0 or self.throttle_interval_ms < 0:
            raise ValueError("max_wait_ms and throttle_interval_ms must not be negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchedCall:
    """One call inside a batch: the id `RpcBatcher.submit` returned, and the request."""

    call_id: int
    request: RpcRequest


class BatcherAction:
    """Base class of what the batcher asks its driver to do."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SendBatch(BatcherAction):
    """POST these calls to ``/rpc`` now, then report how it ended with `BatchSent`."""

    batch_id: int
    """Names this batch in the result the driver feeds back."""
    calls: tuple[BatchedCall, ...]
    """The calls, in body order (the server answers by position)."""
    as_array: bool
    """True: the body is a JSON array of call objects (even of one).  False: the body is
    the single call object of ``calls[0]`` (batching disabled)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AbortBatch(BatcherAction):
    """Abandon the request of batch ``batch_id`` (one held call, withdrawn): close it
    without waiting for the reply, and feed no `BatchSent` for it."""

    batch_id: int


class BatcherEvent:
    """Base class of what the batcher reports to the application."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSettled(BatcherEvent):
    """Call ``call_id`` has its final outcome; it is emitted exactly once per call."""

    call_id: int
    outcome: RpcOutcome


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchReply:
    """The server answered with HTTP 2xx; ``body`` is the parsed JSON, unchecked."""

    body: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchFailed:
    """No usable answer: network error, non-2xx status, body that is not JSON."""

    error: str
    """Why, for the application (e.g. ``HTTP 502: Bad Gateway``)."""


BatchResult = BatchReply | BatchFailed


# -- inputs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BatcherInput:
    """Base of everything the batcher consumes."""

    now: int
    """The driver's monotonic clock, in milliseconds."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitCall(BatcherInput):
    """Queue ``request`` as call ``call_id``; its `CallSettled` will carry that id.

    The driver picks the id: one of a machine's ``SendRpc`` (no mapping needed) or one
    from `RpcBatcher.free_call_id`.  It must not name a call still queued or in flight.
    """

    call_id: int
    request: RpcRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class WithdrawCall(BatcherInput):
    """The caller stopped waiting: if the call is still queued it never goes out and
    settles at once as failed (``Call withdrawn``).  A call already in a batch (sent or
    not yet drained) is on its way and settles with its reply; an unknown or settled id
    has nothing left to withdraw.  Either way nothing raises."""

    call_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearQueue(BatcherInput):
    """Fail every queued call with ``Batch queue cleared`` (the original's ``clear()``).

    Calls in flight are not touched: their reply settles them, and the server may well
    have run them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchSent(BatcherInput):
    """How the POST of batch ``batch_id`` ended; settles each of its calls."""

    batch_id: int
    result: BatchResult


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseBatcher(BatcherInput):
    """Settle everything as failed and stop: queued calls, then calls in flight.

    A `SendBatch` not yet drained is withdrawn (its calls fail like those in flight).  A
    reply arriving later for a batch that was in flight is accepted and ignored.
    Idempotent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Queued:
    call: BatchedCall
    submitted_at: int


def outcome_of_item(item: Any) -> RpcOutcome:
    """The outcome one reply object stands for (§3).

    ``{"success": true, "result": …}`` is `RpcOk`, ``{"success": false, "error": "…"}`` is
    the server's `RpcFailed`; anything else is a malformed reply, a transport failure.
    """
    if isinstance(item, dict):
        success = item.get("success")
        if success is True and "result" in item:
            return RpcOk(result=item["result"])
        if success is False and isinstance(item.get("error"), str):
            return RpcFailed(error=item["error"])
    return RpcFailed(error=ERR_MALFORMED_ITEM, transport=True)


def _settle_batch(
    calls: Sequence[BatchedCall], as_array: bool, result: BatchResult
) -> list[RpcOutcome]:
    """One outcome per call, in order, each from its own item (B9)."""
    if isinstance(result, BatchFailed):
        return [RpcFailed(error=result.error, transport=True)] * len(calls)
    body = result.body
    if not as_array:
        return [outcome_of_item(body)]
    if not isinstance(body, list):
        return [RpcFailed(error=ERR_NOT_ARRAY, transport=True)] * len(calls)
    if len(body) != len(calls):
        # Replies match calls by position only (§3); with a count mismatch none can be trusted.
        error = f"Server returned {len(body)} replies for a batch of {len(calls)} calls"
        return [RpcFailed(error=error, transport=True)] * len(calls)
    return [outcome_of_item(item) for item in body]


class RpcBatcher:
    """Groups RPC calls into HTTP bodies; see the module docstring for the rules.

    Inputs go through `handle` (the `BatcherInput` classes) and `handle_timer`; output is
    `next_action` (what to send) and `next_event` (settled calls), each None when empty.
    `get_timer` is the next deadline at which the driver must call `handle_timer`.
    """

    def __init__(self, options: BatcherOptions | None = None) -> None:
        self.options = options or BatcherOptions()
        self._queue: deque[_Queued] = deque()
        self._in_flight: dict[int, SendBatch] = {}
        self._held: set[int] = set()  # batches of one HELD call, among those in flight
        self._urgent_queued = 0  # URGENT calls in the queue
        self._live: set[int] = set()  # ids of calls queued or in flight
        self._abandoned: set[int] = set()  # in flight when closed: replies are dropped
        self._last_send_at: int | None = None
        self._next_call_id = 1
        self._next_batch_id = 1
        self._closed = False
        self._actions: deque[BatcherAction] = deque()
        self._events: deque[BatcherEvent] = deque()

    # -- inputs --------------------------------------------------------------------------

    def handle(self, input: BatcherInput) -> None:
        """Consume one input (see the input classes for what each does)."""
        handler = _HANDLERS.get(type(input))
        if handler is None:
            raise UsageError(f"the batcher does not take {type(input).__name__}")
        handler(self, input)

    def handle_timer(self, now: int) -> None:
        """Send whatever is due at ``now``; harmless when nothing is."""
        self._pump(now)

    def free_call_id(self) -> int:
        """An id no queued or in-flight call uses, for a driver without ids of its own."""
        while self._next_call_id in self._live:
            self._next_call_id += 1
        call_id = self._next_call_id
        self._next_call_id += 1
        return call_id

    def _on_submit(self, input: SubmitCall) -> None:
        if self._closed:
            raise UsageError("SubmitCall after CloseBatcher")
        if input.call_id in self._live:
            raise UsageError(f"call {input.call_id} is still queued or in flight")
        self._live.add(input.call_id)
        call = BatchedCall(call_id=input.call_id, request=input.request)
        urgency = input.request.urgency
        if urgency is Urgency.HELD:
            # Alone and at once, outside the throttle (it spaces batches, and this one
            # holds no companion); tracked so that withdrawing it can abandon it.
            self._send([call], input.now, as_array=self.options.enabled, held=True)
            return
        if urgency is Urgency.URGENT:
            self._urgent_queued += 1
        self._queue.append(_Queued(call=call, submitted_at=input.now))
        self._pump(input.now)

    def _on_batch_sent(self, input: BatchSent) -> None:
        if input.batch_id in self._abandoned:
            self._abandoned.discard(input.batch_id)  # its calls settled when we closed
            return
        batch = self._in_flight.pop(input.batch_id, None)
        if batch is None:
            raise UsageError(f"no batch {input.batch_id} is in flight")
        self._held.discard(input.batch_id)
        outcomes = _settle_batch(batch.calls, batch.as_array, input.result)
        for call, outcome in zip(batch.calls, outcomes, strict=True):
            self._settle(call, outcome)
        self._pump(input.now)

    def _on_withdraw(self, input: WithdrawCall) -> None:
        for index, queued in enumerate(self._queue):
            if queued.call.call_id == input.call_id:
                del self._queue[index]
                self._forget_urgency(queued.call)
                # A shorter queue is never due earlier, so no send can become due here.
                self._fail(queued.call, ERR_WITHDRAWN)
                return
        for batch_id in self._held:
            batch = self._in_flight[batch_id]
            if batch.calls[0].call_id == input.call_id:
                del self._in_flight[batch_id]
                self._held.discard(batch_id)
                self._actions.append(AbortBatch(batch_id=batch_id))
                self._fail(batch.calls[0], ERR_WITHDRAWN)
                return

    def _on_clear(self, _: ClearQueue | CloseBatcher) -> None:
        while self._queue:
            call = self._queue.popleft().call
            self._forget_urgency(call)
            self._fail(call, ERR_QUEUE_CLEARED)

    def _on_close(self, input: CloseBatcher) -> None:
        self._on_clear(input)
        self._actions.clear()  # sends not yet drained never happen: no action after close
        for batch_id, batch in self._in_flight.items():
            self._abandoned.add(batch_id)
            for call in batch.calls:
                self._fail(call, ERR_CLOSED_IN_FLIGHT)
        self._in_flight.clear()
        self._held.clear()
        self._closed = True

    # -- outputs -------------------------------------------------------------------------

    def next_action(self) -> BatcherAction | None:
        """The next thing to send, or None."""
        return self._actions.popleft() if self._actions else None

    def next_event(self) -> BatcherEvent | None:
        """The next settled call, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> int | None:
        """When `handle_timer` must run next (monotonic ms), or None when nothing waits."""
        if self._closed or not self._queue:
            return None
        if self._urgent_queued and len(self._in_flight) == len(self._held):
            # Nothing in flight but held calls: an urgent call is due since it arrived,
            # and the head was queued no later.
            return self._queue[0].submitted_at
        due = self._queue[0].submitted_at + self.options.max_wait_ms
        if len(self._queue) >= self.options.max_batch_size:
            # Full: due since the call that filled it arrived, if the head is not due yet.
            due = min(due, self._queue[self.options.max_batch_size - 1].submitted_at)
        return max(due, self._throttle_until())

    @property
    def queued(self) -> int:
        """How many calls wait in the queue."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """How many calls have been sent and await their reply."""
        return sum(len(batch.calls) for batch in self._in_flight.values())

    @property
    def held(self) -> int:
        """How many of the calls in flight are HELD ones (each alone in its request)."""
        return len(self._held)

    @property
    def closed(self) -> bool:
        """True once `CloseBatcher` was handled."""
        return self._closed

    # -- internals -----------------------------------------------------------------------

    def _throttle_until(self) -> int:
        if self._last_send_at is None or not self.options.enabled:
            return -1
        return self._last_send_at + self.options.throttle_interval_ms

    def _pump(self, now: int) -> None:
        """Send every batch that is due at ``now``; what remains keeps its own deadline."""
        if not self.options.enabled:
            while self._queue:
                call = self._queue.popleft().call
                self._forget_urgency(call)
                self._send([call], now, as_array=False)
            return
        while True:
            deadline = self.get_timer()
            if deadline is None or deadline > now:
                return
            calls = self._take_batch()
            for call in calls:
                self._forget_urgency(call)
            self._send(calls, now, as_array=True)

    def _take_batch(self) -> list[BatchedCall]:
        """The calls of the next batch, removed from the queue.

        Normally the head of the queue.  When the batch leaves because an urgent call is
        due (nothing in flight but held calls), the urgent calls board first: with a small
        ``max_batch_size`` the head's calls that can wait would otherwise take the seats
        and leave the urgent call behind the throttle.  Order inside the queue carries no
        meaning (calls that depend on each other are submitted one after the other's
        settlement), so this reordering is safe.
        """
        size = min(len(self._queue), self.options.max_batch_size)
        if not (self._urgent_queued and len(self._in_flight) == len(self._held)):
            return [self._queue.popleft().call for _ in range(size)]
        urgent = [q for q in self._queue if q.call.request.urgency is Urgency.URGENT]
        others = [q for q in self._queue if q.call.request.urgency is not Urgency.URGENT]
        taken = {id(q) for q in (urgent + others)[:size]}
        chosen = [q for q in self._queue if id(q) in taken]  # seats by urgency, order kept
        self._queue = deque(q for q in self._queue if id(q) not in taken)
        return [q.call for q in chosen]

    def _forget_urgency(self, call: BatchedCall) -> None:
        """``call`` left the queue (sent, withdrawn, cleared)."""
        if call.request.urgency is Urgency.URGENT:
            self._urgent_queued -= 1

    def _send(
        self, calls: list[BatchedCall], now: int, *, as_array: bool, held: bool = False
    ) -> None:
        batch = SendBatch(batch_id=self._next_batch_id, calls=tuple(calls), as_array=as_array)
        self._next_batch_id += 1
        self._in_flight[batch.batch_id] = batch
        if held:
            self._held.add(batch.batch_id)
        else:
            self._last_send_at = now
        self._actions.append(batch)

    def _fail(self, call: BatchedCall, error: str) -> None:
        self._settle(call, RpcFailed(error=error, transport=True))

    def _settle(self, call: BatchedCall, outcome: RpcOutcome) -> None:
        self._live.discard(call.call_id)
        self._events.append(CallSettled(call_id=call.call_id, outcome=outcome))


_I = TypeVar("_I", bound=BatcherInput)


def _entry(
    cls: type[_I], handler: Callable[[RpcBatcher, _I], None]
) -> tuple[type[BatcherInput], Callable[[RpcBatcher, Any], None]]:
    return cls, handler


_HANDLERS: dict[type[BatcherInput], Callable[[RpcBatcher, Any], None]] = dict(
    [
        _entry(SubmitCall, RpcBatcher._on_submit),
        _entry(WithdrawCall, RpcBatcher._on_withdraw),
        _entry(ClearQueue, RpcBatcher._on_clear),
        _entry(BatchSent, RpcBatcher._on_batch_sent),
        _entry(CloseBatcher, RpcBatcher._on_close),
    ]
)
"""Which handler consumes each input: the batcher has one state, so inputs are the table."""
