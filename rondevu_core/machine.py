"""The one contract every state machine of the core fulfils.

A machine consumes inputs and produces output; it never performs I/O, reads a clock or
draws a random number.  A driver (or an owning machine, when machines are layered, as
aioquic's ``h3`` sits on ``quic``) runs it with five calls:

- ``handle(input)``: consume one input (`rondevu_core.inputs.Input` or a subclass of
  the machine's own vocabulary); returns nothing;
- ``get_timer()``: the machine's next deadline, in the driver's monotonic milliseconds,
  or None when nothing is pending;
- ``handle_timer(now)``: run whatever is due at ``now``;
- ``next_action()`` / ``next_event()``: drain what the machine asks the driver to do and
  what it tells the application, oldest first, None when empty.

`Outbox` (the ordered output queues and the id source) and `Deadlines` (named absolute
deadlines) are the shared plumbing machines build on.
"""

from __future__ import annotations

from typing import Protocol

from rondevu_core.actions import Action
from rondevu_core.events import Event
from rondevu_core.inputs import Input
from rondevu_core.outbox import Deadlines, Outbox

__all__ = ["Deadlines", "Machine", "Outbox"]


class Machine(Protocol):
    """What a driver needs of any core machine; see the module docstring."""

    def handle(self, input: Input) -> None:
        """Consume one input, then drain the outbox."""

    def get_timer(self) -> int | None:
        """The next deadline (monotonic ms), or None."""

    def handle_timer(self, now: int) -> None:
        """Run every deadline due at ``now``."""

    def next_action(self) -> Action | None:
        """The oldest queued action, or None."""

    def next_event(self) -> Event | None:
        """The oldest queued event, or None."""
