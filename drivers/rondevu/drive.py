"""`DriveLoop`: the one timer loop that runs any core machine's deadlines under anyio.

Every machine of the core keeps its deadlines the same way (`rondevu_core.machine`):
``get_timer()`` says when, ``handle_timer(now)`` runs what is due.  The loop sleeps until
the next deadline, or until `DriveLoop.poke` says it may have moved (after any input),
then fires it and lets the driver drain the machine's output.  The runtime's
`MachineRunner` and the `RpcClient` both use it, so there is one loop to get right.

The clock is injected (monotonic milliseconds); it must run at the event loop's pace,
since the loop sleeps in real time for the difference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import anyio
import anyio.lowlevel

__all__ = ["DriveLoop", "TimedMachine"]


class TimedMachine(Protocol):
    """The part of the machine contract the loop needs."""

    def get_timer(self) -> int | None: ...
    def handle_timer(self, now: int) -> None: ...


class DriveLoop:
    """Fires ``machine``'s deadlines on time; ``drain`` runs after each firing."""

    def __init__(
        self,
        machine: TimedMachine,
        *,
        clock: Callable[[], int],
        drain: Callable[[], None],
    ) -> None:
        self._machine = machine
        self._clock = clock
        self._drain = drain
        self._wake = anyio.Event()
        self._stopped = False

    def poke(self) -> None:
        """The machine took an input: its deadline may have moved."""
        self._wake.set()

    def stop(self) -> None:
        """End `run` at its next wake-up (cancelling its task ends it at once)."""
        self._stopped = True
        self._wake.set()

    async def run(self) -> None:
        """Until `stop`: sleep to the next deadline, fire it, drain."""
        while not self._stopped:
            self._wake = wake = anyio.Event()
            deadline = self._machine.get_timer()
            if deadline is None:
                await wake.wait()
                continue
            delay = deadline - self._clock()
            if delay > 0:
                with anyio.move_on_after(delay / 1000):
                    await wake.wait()
                continue
            self._machine.handle_timer(self._clock())
            self._drain()
            # A machine moves its deadline past ``now`` when it fires; yield anyway, so a
            # deadline that did not move could never spin the loop without a pause.
            await anyio.lowlevel.checkpoint()
