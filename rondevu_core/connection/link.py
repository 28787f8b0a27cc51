"""`Link`: the life of a connection's link - up, lost, and reconnected.

The link is up when ICE is connected *and* the data channel is open.  A failure closes
the current peer connection; then an answerer with reconnection enabled schedules the
next attempt with backoff and jitter (or waits while paused), an offerer with a session
waits for its peer to resume it, and anything else stays FAILED.  ICE ``disconnected``
on an established link is softer: the old peer connection is kept while the backoff
runs, so a link that recovers costs nothing.
"""

from __future__ import annotations

from rondevu_core.actions import ClosePeerConnection
from rondevu_core.connection.sending import Sending
from rondevu_core.connection.states import Deferred, Role, State, Timer
from rondevu_core.delivery.machine import ChannelUp, DeliverySession, FrameReceived
from rondevu_core.events import (
    CleanupComplete,
    CleanupStarted,
    Connected,
    Disconnected,
    Failed,
    MessageReplayed,
    ReconnectExhausted,
    ReconnectFailed,
    ReconnectScheduled,
    ReconnectSuccess,
)
from rondevu_core.ice_exchange import EndExchange, StopPolling


class Link(Sending):
    """Connected, failure, teardown and the reconnection policy; see the module docstring."""

    __slots__ = ()

    def _maybe_connected(self, now: int) -> None:
        if self.state in (State.GATHERING, State.CONNECTED):
            return  # GATHERING: re-checked once our description is out
        if not (self._ice_ok and self._channel_open):
            if (self._ice_ok or self._channel_open) and self.state in (
                State.SIGNALING,
                State.CHECKING,
            ):
                self._set_state(State.CONNECTING)
            return
        recovered = self.state in (State.DISCONNECTED, State.RECONNECTING)
        self._deadlines.cancel(Timer.CONNECTION)
        self._deadlines.cancel(Timer.HANDSHAKE)
        self._deadlines.cancel(Timer.GATHERING)  # moot once connected
        self._deadlines.cancel(Timer.RECONNECT)
        self._deadlines.cancel(Timer.PROBE)
        self._deferred = None
        self._set_state(State.CONNECTED)
        self._emit(Connected)
        if self._reconnect_attempt and not recovered:
            self._emit(ReconnectSuccess, attempt=self._reconnect_attempt)
        self._reconnect_attempt = 0
        self._backoff.reset()
        if self._layered:
            assert self.config.session is not None
            if self._delivery is None:
                self._delivery = DeliverySession(self.config.session, peer_limit=self._plain_limit)
            self._delivery.handle(ChannelUp(now=now))
            early, self._early_frames = self._early_frames, []
            for data in early:
                self._delivery.handle(FrameReceived(now=now, data=data))
            self._pump(now)
            held, self._held = self._held, []
            for data, at in held:
                self._emit(MessageReplayed, data=data, buffered_at=at)
        self._replay(now)

    def _teardown(self, linger_ms: int = 0) -> None:
        """Close the current peer connection and forget everything tied to it;
        ``linger_ms`` lets what was already sent on it leave first."""
        self._stale.update(self._calls)
        self._calls.clear()
        self._deadlines.cancel(Timer.CONNECTION)
        self._deadlines.cancel(Timer.HANDSHAKE)
        self._deadlines.cancel(Timer.GATHERING)
        if self._pc is None and self._exchange is None:
            return
        self._emit(CleanupStarted)
        if self._exchange is not None:
            # Stopped first: a held poll is then cancelled, so it is not left waiting
            # among the stale calls for a result that will never come.
            self._exchange.handle(StopPolling())
            self._stale.update(self._exchange.calls_in_flight())
            self._exchange.handle(EndExchange())
            self._exchange = None
        if self._pc is not None:
            self._outbox.act(ClosePeerConnection(pc_id=self._pc, linger_ms=linger_ms))
            self._pc = None
        self._ice_ok = False
        self._channel = None
        self._channel_open = False
        self._early_frames = []
        self._channel_down(0)
        self._emit(CleanupComplete)

    def _fail(self, now: int, error: str) -> None:
        """End the current attempt (or established link) with ``error``."""
        if self.state in (State.DISCONNECTED, State.RECONNECTING):
            # The link was already lost (soft drop); finish off the old peer connection.
            self._teardown()
            if self.state is State.DISCONNECTED and self._deferred is None:
                self._set_state(State.FAILED, error)
                self._emit(Failed, error=error, final=self._loss_is_final())
                self._after_loss(now)
            return
        was_up = self.state is State.CONNECTED
        self._teardown()
        if was_up:
            self._set_state(State.DISCONNECTED, error)
            self._emit(Disconnected, reason=error)
        elif self._reconnect_attempt:
            self._emit(ReconnectFailed, error=error)
        self._set_state(State.FAILED, error)
        self._emit(Failed, error=error, final=self._loss_is_final())
        self._after_loss(now)

    def _loss_is_final(self) -> bool:
        """Whether `_after_loss` will give up: the ``failed`` event says so in advance."""
        if self._permanent:
            return True
        if self.role is Role.OFFERER:
            return self._delivery is None
        return not self.config.reconnect_enabled or self._backoff.exhausted

    def _after_loss(self, now: int) -> None:
        """After a failure or drop: schedule a reconnection, defer it, or give up."""
        if self.role is Role.OFFERER and self._delivery is not None and not self._permanent:
            # The peer comes back through a new offer of our pool (`resume_with`).
            assert self.config.session is not None
            self._set_state(State.RECONNECTING, "Waiting for the peer to resume")
            self._deadlines.set(Timer.RESUME, now + self.config.session.resume_timeout_ms)
        elif self.role is Role.OFFERER or not self.config.reconnect_enabled or self._permanent:
            self._give_up()
        elif self._backoff.exhausted:
            self._emit(ReconnectExhausted, attempts=self._backoff.attempt)
            self._give_up()
        elif self._paused:
            self._deferred = Deferred.SCHEDULE
        else:
            self._schedule(now)

    def _soft_drop(self, now: int, reason: str) -> None:
        """ICE disconnected on an established link: keep the pc, arm the reconnection."""
        self._ice_ok = False
        self._channel_down(now)
        self._set_state(State.DISCONNECTED, reason)
        self._emit(Disconnected, reason=reason)
        if self.role is Role.ANSWERER and self.config.reconnect_enabled:
            if self._backoff.exhausted:
                self._emit(ReconnectExhausted, attempts=self._backoff.attempt)
                self._teardown()
                self._give_up()
            elif self._paused:
                self._deferred = Deferred.SCHEDULE
            else:
                self._schedule(now)

    def _schedule(self, now: int) -> None:
        delay = self._backoff.next_delay(self._random())
        assert delay is not None  # exhaustion is checked by the caller
        if self._silent_loss and self._backoff.attempt == 1:
            # The heartbeat already waited out its timeout: the first attempt goes at
            # once (later ones back off as usual, if the network is really gone).
            delay = 0
        self._silent_loss = False
        self._reconnect_attempt = self._backoff.attempt
        self._set_state(State.RECONNECTING)
        self._deadlines.set(Timer.RECONNECT, now + delay)
        self._arm_probe(now)
        self._emit(
            ReconnectScheduled,
            attempt=self._reconnect_attempt,
            delay=delay,
            max_attempts=self._backoff.policy.max_attempts,
        )

    def _arm_probe(self, now: int) -> None:
        """While a long backoff runs, look for the service now and then (the first
        step of an attempt, alone), so a link restored meanwhile is used at once."""
        interval = self.config.reconnect_probe_interval_ms
        due = self._deadlines.next_of(Timer.RECONNECT)
        if interval and due is not None and due - now > interval:
            self._deadlines.set(Timer.PROBE, now + interval)
        else:
            self._deadlines.cancel(Timer.PROBE)

    def _give_up(self) -> None:
        self._terminal = True
        self._deadlines.clear()
        if not self.config.preserve_buffer_on_close:
            self._report_unacked("the connection failed for good")
            self._drop_buffer()
        # Otherwise the buffer waits, unexpired, for `Close` to hand it back as ``unsent``.
        if self.state is not State.FAILED:
            self._set_state(State.FAILED, "no reconnection")
            self._emit(Failed, error="Connection lost", final=True)
