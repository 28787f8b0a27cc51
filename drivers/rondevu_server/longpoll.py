"""Long polling (our extension): calls held until there is news, and what wakes them.

A ``poll`` or ``getIceCandidates`` call that carries ``waitMs`` and would answer empty
is *held*: it registers a `Waiter` under the key of what it waits for, then reads its
answer again each time that key is woken, until a read has news, its wait ends, or the
server stops holding (`WaitRegistry.close`, at shutdown).  The answer is always the
method's normal result, so a held call differs from a plain one only in *when* it is
answered.

Keys (built by `poll_key` and `ice_key`, the only place that spells them):

- ``u:<username>``: that user's ``poll`` (an answer to one of its offers, or a
  candidate from one of its answerers);
- ``i:<offerId>:<username>``: that user's ``getIceCandidates`` for that offer (a
  candidate from the other side of that offer).

A key written with `end_key` (``!`` before it) ends the calls held on that key instead:
they read once more and are answered with that read, news or not.  A user's
``publishService`` and ``deleteService`` end that user's held polls this way: another
process of the same user may have replaced or withdrawn the offers a held poll waits on,
and the poll's answer cannot say so (only a look at the service can), so the waiting
client is answered early and looks.

Writes return the keys they may have given news to (`rondevu_server.storage`); the
method that wrote wakes them here at once, and the storage tells the server's other
processes, whose own registries are woken through `WakeSink`.  A wake only means
"read again": a waiter always re-reads storage, so a spurious wake costs one read and
changes no answer, and waking a key nobody waits on costs a dict lookup.

Registration comes *before* a held call's first read, so a write that lands between
that read and the wait still wakes it: no news can fall in the gap.

Bounds: at most ``max_waiting`` calls held at once in this process and
``max_waiting_per_user`` per authenticated username.  A call past either bound, or
arriving while the registry is closed, is answered at once (as if it had no
``waitMs``): its client sees exactly what a 0.5.4 server, which ignores ``waitMs``,
would have sent, and a client that copes with that server copes with this too.

Waiters of one request share a `Signal`, so a batch holding several calls waits for
the first of them to have news (`settle`).  Deadlines are on the event loop's monotonic
clock; the server's clock (``clock``, Unix ms) only gives each re-read its ``now``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = [
    "Held",
    "Read",
    "Signal",
    "Wait",
    "WaitRegistry",
    "Waiter",
    "WakeSink",
    "begin",
    "end_key",
    "ice_key",
    "poll_key",
    "settle",
]

_T = TypeVar("_T")

Read = Callable[[int], Awaitable[tuple[bool, _T]]]
"""A held call's read: given ``now`` (Unix ms), ``(has news, the answer to send)``."""


def poll_key(username: str) -> str:
    """The key a held ``poll`` of ``username`` waits on."""
    return "u:" + username


def ice_key(offer_id: str, reader: str) -> str:
    """The key a held ``getIceCandidates`` of ``reader`` for ``offer_id`` waits on."""
    return f"i:{offer_id}:{reader}"


def end_key(key: str) -> str:
    """The wake key that *ends* the calls held on ``key`` (see the module docstring)."""
    return "!" + key


class WakeSink(Protocol):
    """Where a storage delivers the wake-ups written by other processes."""

    def wake(self, keys: Iterable[str]) -> None:
        """These keys may have news."""

    def wake_all(self) -> None:
        """Anything may have news (wake-ups may have been missed, e.g. on a reconnect)."""

    @property
    def waiting(self) -> int:
        """Calls held now; a storage may skip looking for wake-ups while it is 0."""


class Signal:
    """Set when any waiter of one request is woken (a batch shares one), or when the
    request is abandoned (its client left)."""

    __slots__ = ("_event", "abandoned")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.abandoned = False

    def set(self) -> None:
        self._event.set()

    def abandon(self) -> None:
        """Nobody waits for the answer any more: stop holding."""
        self.abandoned = True
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """True once set (then cleared for the next round), False after ``seconds``."""
        if not self._event.is_set():
            try:
                async with asyncio.timeout(seconds):
                    await self._event.wait()
            except TimeoutError:
                return False
        self._event.clear()
        return True


class Waiter:
    """One held call's registration: its key, its user, and whether it was woken."""

    __slots__ = ("ended", "key", "signal", "user", "woken")

    def __init__(self, key: str, user: str, signal: Signal) -> None:
        self.key = key
        self.user = user
        self.signal = signal
        self.woken = False
        self.ended = False

    def wake(self, *, end: bool = False) -> None:
        self.woken = True
        self.ended = self.ended or end
        self.signal.set()


class WaitRegistry:
    """The held calls of one server process, by key, with their bounds."""

    def __init__(self, *, max_waiting: int, max_waiting_per_user: int) -> None:
        self.max_waiting = max_waiting
        self.max_waiting_per_user = max_waiting_per_user
        self._by_key: dict[str, set[Waiter]] = {}
        self._per_user: dict[str, int] = {}
        self._count = 0
        self._closed = False
        self._changed: asyncio.Event | None = None

    @property
    def waiting(self) -> int:
        """Calls held now."""
        return self._count

    @property
    def closed(self) -> bool:
        """True once `close` ran: nothing more is held."""
        return self._closed

    def register(self, key: str, user: str, signal: Signal) -> Waiter | None:
        """A waiter for ``key``, or None when closed or a bound is reached."""
        held_by_user = self._per_user.get(user, 0)
        if (
            self._closed
            or self._count >= self.max_waiting
            or held_by_user >= self.max_waiting_per_user
        ):
            return None
        waiter = Waiter(key, user, signal)
        self._by_key.setdefault(key, set()).add(waiter)
        self._per_user[user] = held_by_user + 1
        self._count += 1
        self._note_change()
        return waiter

    def release(self, waiter: Waiter) -> None:
        """Forget ``waiter`` (its call is answered)."""
        waiters = self._by_key.get(waiter.key)
        if waiters is None or waiter not in waiters:
            return
        waiters.discard(waiter)
        if not waiters:
            del self._by_key[waiter.key]
        left = self._per_user[waiter.user] - 1
        if left:
            self._per_user[waiter.user] = left
        else:
            del self._per_user[waiter.user]
        self._count -= 1
        self._note_change()

    def _note_change(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def until_waiting(self, count: int) -> None:
        """Return once exactly ``count`` calls are held (tests and tools watch with it)."""
        while self._count != count:
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def wake(self, keys: Iterable[str]) -> None:
        """Wake every call held on one of ``keys``; an `end_key` ends those calls."""
        for key in keys:
            end = key.startswith("!")
            for waiter in self._by_key.get(key[1:] if end else key, ()):
                waiter.wake(end=end)

    def wake_all(self) -> None:
        """Wake every held call (each re-reads once)."""
        for waiters in self._by_key.values():
            for waiter in waiters:
                waiter.wake()

    def close(self) -> None:
        """Hold nothing more: every held call is answered now with its latest read, and
        later calls are answered at once.  Idempotent."""
        self._closed = True
        self.wake_all()


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait(Generic[_T]):
    """What a handler returns for a call that asked to be held (``waitMs`` > 0)."""

    key: str
    """What the call waits for (`poll_key`, `ice_key`)."""
    user: str
    """The authenticated caller, for the per-user bound."""
    wait_ms: int
    """How long to hold it at most (already capped)."""
    read: Read[_T]
    """Reads the call's answer, first at once, then after each wake."""


@dataclass(slots=True, kw_only=True)
class Held(Generic[_T]):
    """A call being held: its registration, deadline, read, and latest answer."""

    waiter: Waiter
    deadline: float
    """Event loop time when the wait ends."""
    read: Read[_T]
    answer: _T
    """What the call answers if it is answered now."""


async def begin(
    registry: WaitRegistry,
    *,
    key: str,
    user: str,
    wait_ms: int,
    read: Read[_T],
    now: int,
    signal: Signal,
) -> Held[_T] | _T:
    """Read a call's answer; hold it instead when it asked to wait and has no news.

    Returns the answer, or a `Held` that `settle` finishes (and releases)."""
    waiter = registry.register(key, user, signal) if wait_ms > 0 else None
    try:
        news, answer = await read(now)
    except BaseException:
        if waiter is not None:
            registry.release(waiter)
        raise
    if waiter is None:
        return answer
    if news or registry.closed:
        registry.release(waiter)
        return answer
    # A wake during the read stays noted (the read may have missed that write), so
    # `settle` reads again at once.
    deadline = asyncio.get_running_loop().time() + wait_ms / 1000
    return Held(waiter=waiter, deadline=deadline, read=read, answer=answer)


async def settle(
    registry: WaitRegistry,
    held: Sequence[Held[_T]],
    signal: Signal,
    clock: Callable[[], int],
    disconnected: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Hold ``held`` (the calls of one request sharing ``signal``) until one of them has
    news, the earliest deadline passes, the registry closes, or ``disconnected`` returns
    (the client left: nobody to answer); each ``answer`` is then the one to send.
    Every waiter is released, however this ends."""
    loop = asyncio.get_running_loop()
    deadline = min(item.deadline for item in held)
    watcher = None
    if disconnected is not None:
        watcher = loop.create_task(_abandon_when(disconnected, signal))
    try:
        while not registry.closed:
            left = deadline - loop.time()
            if left <= 0 or not await signal.wait(left):
                return
            if registry.closed or signal.abandoned:  # answer with what was read last
                return
            news = False
            for item in held:
                if item.waiter.woken:
                    item.waiter.woken = False
                    found, item.answer = await item.read(clock())
                    news = news or found or item.waiter.ended
            if news:
                return
    finally:
        if watcher is not None:
            watcher.cancel()
        for item in held:
            registry.release(item.waiter)


async def _abandon_when(disconnected: Callable[[], Awaitable[object]], signal: Signal) -> None:
    await disconnected()
    signal.abandon()
