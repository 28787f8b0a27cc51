"""Plumbing shared by every machine: the output queues, the id source and the deadlines.

An `Outbox` holds the actions and events a machine produced, in order, until the driver
drains them; machines layered on one another (an offer pool and its connections, a
connection and its ICE exchange) share one outbox, so the driver sees a single
ordered stream per top-level machine.  It also hands out the integer ids that name peer
connections, RPC calls and connections: sequential, hence deterministic under test, and
unique within one outbox.

`Deadlines` maps a machine's timer names to absolute due times (ms); ``next()`` is what
``get_timer()`` reports and ``pop_due(now)`` what ``handle_timer(now)`` consumes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from rondevu_core.actions import Action
from rondevu_core.events import Event

__all__ = ["Deadlines", "DrainsOutbox", "Outbox", "earliest"]

K = TypeVar("K", bound=Hashable)


class Outbox:
    """Ordered actions and events awaiting the driver, and the id source."""

    __slots__ = ("_actions", "_events", "_next_id")

    def __init__(self, *, first_id: int = 1) -> None:
        self._actions: deque[Action] = deque()
        self._events: deque[Event] = deque()
        self._next_id = first_id

    def new_id(self) -> int:
        """A fresh id, never handed out before by this outbox."""
        value = self._next_id
        self._next_id = value + 1
        return value

    def act(self, action: Action) -> None:
        """Queue an action for the driver."""
        self._actions.append(action)

    def emit(self, event: Event) -> None:
        """Queue an event for the application."""
        self._events.append(event)

    def next_action(self) -> Action | None:
        """The oldest queued action, or None."""
        return self._actions.popleft() if self._actions else None

    def next_event(self) -> Event | None:
        """The oldest queued event, or None."""
        return self._events.popleft() if self._events else None

    @property
    def pending_actions(self) -> int:
        """How many actions wait to be drained."""
        return len(self._actions)


class DrainsOutbox:
    """``next_action`` / ``next_event`` for a machine whose output waits in an `Outbox`
    it holds as ``_outbox`` (shared with the machines layered on or under it)."""

    __slots__ = ()
    _outbox: Outbox

    def next_action(self) -> Action | None:
        """The oldest queued action of the outbox, or None."""
        return self._outbox.next_action()

    def next_event(self) -> Event | None:
        """The oldest queued event of the outbox, or None."""
        return self._outbox.next_event()


def earliest(*deadlines: int | None) -> int | None:
    """The earliest of ``deadlines`` that are set, or None: a machine's `get_timer`
    over its own deadline and those of the machines it owns."""
    return min((d for d in deadlines if d is not None), default=None)


class Deadlines(Generic[K]):
    """Named absolute deadlines (ms)."""

    __slots__ = ("_due",)

    def __init__(self) -> None:
        self._due: dict[K, int] = {}

    def __contains__(self, name: K) -> bool:
        return name in self._due

    def __len__(self) -> int:
        return len(self._due)

    def set(self, name: K, at: int) -> None:
        """Arm (or move) ``name`` to fire at ``at``."""
        self._due[name] = at

    def cancel(self, name: K) -> None:
        """Disarm ``name`` if armed."""
        self._due.pop(name, None)

    def clear(self) -> None:
        """Disarm everything."""
        self._due.clear()

    def at(self, name: K) -> int | None:
        """When ``name`` fires, or None when it is not armed."""
        return self._due.get(name)

    def next_of(self, name: K) -> int | None:
        """When ``name`` is due, or None when it is not armed."""
        return self._due.get(name)

    def next(self) -> int | None:
        """The earliest deadline, or None when nothing is armed."""
        return min(self._due.values()) if self._due else None

    def due(self, now: int) -> list[K]:
        """Every deadline due at ``now``, earliest first, left armed (see `is_due`)."""
        due = sorted((at, i, name) for i, (name, at) in enumerate(self._due.items()) if at <= now)
        return [name for _, _, name in due]

    def is_due(self, name: K, now: int) -> bool:
        """True when ``name`` is armed and due at ``now``."""
        at = self._due.get(name)
        return at is not None and at <= now

    def pop_due(self, now: int) -> list[K]:
        """Disarm and return every deadline due at ``now``, earliest first."""
        if not self._due:
            return []
        due = sorted((at, i, name) for i, (name, at) in enumerate(self._due.items()) if at <= now)
        for _, _, name in due:
            del self._due[name]
        return [name for _, _, name in due]
