"""The one contract every state machine of the core fulfils.

A machine consumes inputs and produces output; it never performs I/O, reads a clock or
draws a random number.  A driver (or an owning machine, when machines are layered, as
aioquic's ``h3`` sits on ``quic``) runs it with five calls:

- ``handle(input)``: consume one input of the machine's vocabulary (`Input` for the
  connection and the offer pool, `BatcherInput` for the RPC batcher, `SessionInput` for
  the delivery session, `ExchangeInput` for a connection's ICE exchange); returns
  nothing;
- ``get_timer()``: the machine's next deadline, in the driver's monotonic milliseconds,
  or None when nothing is pending;
- ``handle_timer(now)``: run whatever is due at ``now``;
- ``next_action()`` / ``next_event()``: drain what the machine asks the driver to do and
  what it tells the application, oldest first, None when empty.

`Outbox` (the ordered output queues and the id source) and `Deadlines` (named absolute
deadlines) are the shared plumbing machines build on.

`Machine` is generic in the three vocabularies, so a driver can say exactly what it
runs: ``Machine[Input, Action, Event]`` (a `Connection` or an `OfferPool`) or
``Machine[BatcherInput, BatcherAction, BatcherEvent]`` (the `RpcBatcher`).  One drive
loop (``rondevu.drive.DriveLoop``) keeps the deadlines of all of them.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from rondevu_core.outbox import Deadlines, Outbox

__all__ = ["Deadlines", "Machine", "Outbox"]

InputT_contra = TypeVar("InputT_contra", contravariant=True)
ActionT_co = TypeVar("ActionT_co", covariant=True)
EventT_co = TypeVar("EventT_co", covariant=True)


class Machine(Protocol[InputT_contra, ActionT_co, EventT_co]):
    """What a driver needs of any core machine; see the module docstring."""

    def handle(self, input: InputT_contra, /) -> None:
        """Consume one input; what it causes waits in the output queues."""

    def get_timer(self) -> int | None:
        """The next deadline (monotonic ms), or None."""

    def handle_timer(self, now: int) -> None:
        """Run every deadline due at ``now``."""

    def next_action(self) -> ActionT_co | None:
        """The oldest queued action, or None."""

    def next_event(self) -> EventT_co | None:
        """The oldest queued event, or None."""
