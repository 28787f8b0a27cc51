"""`Sending`: the send path of a connection.

While the link is down, messages wait in the bounded, aged `MessageBuffer` and are
replayed in order when it comes up; every message that leaves the buffer undelivered is
reported.  When both descriptions carry the session attribute, the data channel carries
the frames of a `DeliverySession` instead: sends go into its bounded window (no age
limit), what it produces is pumped out as actions and events, and a new session of the
same peer (a restarted process) takes over what the old one had not delivered.
"""

from __future__ import annotations

from rondevu_core.buffer import Payload
from rondevu_core.connection.base import ConnectionBase
from rondevu_core.connection.states import State, Timer, payload_size
from rondevu_core.delivery.machine import (
    Acknowledged,
    ChannelDown,
    ChannelUp,
    Delivered,
    DeliverySession,
    FrameRejected,
    PeerReset,
    PeerSilent,
    SendPayload,
    Transmit,
    WindowFullError,
)
from rondevu_core.delivery.negotiation import read_session_attribute, remote_max_message_size
from rondevu_core.errors import UsageError
from rondevu_core.events import (
    Message,
    MessageBuffered,
    MessageBufferExpired,
    MessageBufferOverflow,
    MessageReplayed,
    MessagesAcked,
    MessageSent,
    MessagesUndelivered,
    ProtocolViolation,
    SessionReset,
)
from rondevu_core.inputs import SendMessage


class Sending(ConnectionBase):
    """The buffer, the session layer and negotiation; see the module docstring."""

    __slots__ = ()

    def _on_send(self, event: SendMessage) -> None:
        data = event.data
        if self._delivery is not None:
            self._send_in_session(self._delivery, event)
            return
        if self.state is State.CONNECTED:
            assert self._pc is not None
            if self._too_big(data):
                # aiortc would refuse it inside the driver and fail the whole link.
                raise UsageError(
                    f"send: a message of {payload_size(data)} bytes is larger than the peer "
                    f"accepts ({self._plain_limit} bytes); only the session layer chunks"
                )
            self._send_data(data)
            self._emit(MessageSent, data=data, buffered=False)
            return
        if self._terminal:
            raise UsageError("send: the connection has failed for good")
        if not self.config.buffer_enabled:
            raise UsageError("send: not connected and buffering is disabled")
        _, evicted = self._buffer.add(data, event.now)
        for message in evicted:
            self._emit(MessageBufferOverflow, data=message.data)
        if self._buffer.max_size == 0:
            return  # nothing can be held: the message itself was the overflow
        self._emit(MessageBuffered, data=data)
        self._emit(MessageSent, data=data, buffered=True)
        if Timer.BUFFER not in self._deadlines:
            self._arm_buffer_timer()

    def _send_in_session(self, delivery: DeliverySession, event: SendMessage) -> None:
        data = event.data
        if self._terminal:
            raise UsageError("send: the connection has failed for good")
        if self.state is not State.CONNECTED and not self.config.buffer_enabled:
            raise UsageError("send: not connected and buffering is disabled")
        assert self.config.session is not None
        if not delivery.has_room(payload_size(data)):
            if self.config.session.on_window_full == "raise":
                raise WindowFullError(
                    f"send window full ({delivery.unacked_messages} messages, "
                    f"{delivery.unacked_bytes} bytes unacknowledged)"
                )
            self._emit(MessagesUndelivered, messages=(data,), reason="send window full")
            return
        delivery.handle(SendPayload(now=event.now, data=data))
        self._pump(event.now)
        held = self.state is not State.CONNECTED
        if held:
            self._held.append((data, event.now))
            self._emit(MessageBuffered, data=data)
        self._emit(MessageSent, data=data, buffered=held)

    def _replay(self, now: int) -> None:
        """The link is up: send what waited in the buffer, in order; report the rest."""
        fresh, expired = self._buffer.drain(now)
        self._deadlines.cancel(Timer.BUFFER)
        for message in expired:
            self._emit(MessageBufferExpired, data=message.data)
        for message in fresh:
            if self._delivery is None and self._too_big(message.data):
                self._emit(
                    MessagesUndelivered,
                    messages=(message.data,),
                    reason="larger than the peer accepts",
                )
                continue
            if self._delivery is not None:
                if not self._delivery.has_room(payload_size(message.data)):
                    self._emit(
                        MessagesUndelivered, messages=(message.data,), reason="send window full"
                    )
                    continue
                self._delivery.handle(SendPayload(now=now, data=message.data))
                self._pump(now)
            else:
                self._send_data(message.data)
            self._emit(MessageReplayed, data=message.data, buffered_at=message.buffered_at)

    def _arm_buffer_timer(self) -> None:
        oldest = next(iter(self._buffer), None)
        if oldest is None:
            self._deadlines.cancel(Timer.BUFFER)
        else:
            self._deadlines.set(Timer.BUFFER, oldest.buffered_at + self._buffer.max_age_ms + 1)

    def _expire_buffer(self, now: int) -> None:
        for message in self._buffer.expire(now):
            self._emit(MessageBufferExpired, data=message.data)
        self._arm_buffer_timer()

    def _drop_buffer(self) -> None:
        self._buffer.clear()
        self._deadlines.cancel(Timer.BUFFER)

    def _pump(self, now: int) -> None:
        """Turn what the session machine produced into actions and events."""
        while (delivery := self._delivery) is not None:
            while (action := delivery.next_action()) is not None:
                assert isinstance(action, Transmit)
                if self._pc is not None:
                    self._send_data(action.data)
            while (event := delivery.next_event()) is not None:
                if isinstance(event, Delivered):
                    self._emit(Message, data=event.data)
                elif isinstance(event, Acknowledged):
                    self._emit(MessagesAcked, count=event.count)
                elif isinstance(event, FrameRejected):
                    self._outbox.emit(
                        ProtocolViolation(connection_id=self.connection_id, error=event.error)
                    )
                elif isinstance(event, PeerReset):
                    self._restart_session(now, delivery)
                    break  # the new session's output, on the next round
                elif isinstance(event, PeerSilent) and self.state is State.CONNECTED:
                    self._silent_loss = True
                    self._fail(now, "Heartbeat timeout: nothing heard from the peer")
                    self._silent_loss = False
            if self._delivery is delivery:
                return

    def _restart_session(self, now: int, old: DeliverySession) -> None:
        """The peer lost our session (it gave it up, or its pool started again): end
        ours as for a new process, and go on with a new one on the same channel."""
        assert self.config.session is not None
        reason = "the peer lost the session"
        unacked = list(old.unacked())
        data = tuple(u.data for u in unacked)
        resend = self.config.session.on_peer_reset == "resend"
        self._emit(SessionReset, unacked=data, resent=resend, reason=reason)
        fresh = DeliverySession(self.config.session, peer_limit=self._plain_limit)
        self._delivery = fresh
        self._held = []
        if self._channel_open:
            fresh.handle(ChannelUp(now=now))
        if not resend:
            if data:
                maybe = any(u.transmitted for u in unacked)
                self._emit(MessagesUndelivered, messages=data, reason=reason, maybe_delivered=maybe)
            return
        for item in data:
            if fresh.has_room(payload_size(item)):
                fresh.handle(SendPayload(now=now, data=item))
            else:  # cannot happen with one config for both, kept for safety
                self._emit(MessagesUndelivered, messages=(item,), reason="send window full")

    def _channel_down(self, now: int) -> None:
        if self._delivery is not None and self._delivery.channel_up:
            self._delivery.handle(ChannelDown(now=now))

    def _too_big(self, data: Payload) -> bool:
        return self._plain_limit is not None and payload_size(data) > self._plain_limit

    def _new_token(self) -> str:
        # 104 bits from the injected source: unique enough for ids nobody guesses at.
        return "".join(f"{int(self._random() * 2**52):013x}" for _ in range(2))

    def _report_unacked(self, reason: str) -> None:
        """Report everything held (buffer and session window) as undelivered."""
        held = [m.data for m in self._buffer]
        self._drop_buffer()
        maybe = False
        if self._delivery is not None:
            unacked = list(self._delivery.unacked())
            held = [u.data for u in unacked] + held
            maybe = any(u.transmitted for u in unacked)
            self._delivery = None
            self._held = []
        if held:
            self._emit(
                MessagesUndelivered, messages=tuple(held), reason=reason, maybe_delivered=maybe
            )

    def _negotiate(self, now: int, offer_sdp: str) -> None:
        """Answerer: decide from the fetched offer whether this attempt uses the layer,
        and end the old session when the offer comes from another process."""
        remote = None if self.config.session is None else read_session_attribute(offer_sdp)
        old = self._delivery
        if old is not None and (remote is None or remote.token != self._peer_token):
            reason = (
                "the peer no longer speaks the session layer"
                if remote is None
                else "the peer is a new process"
            )
            assert self.config.session is not None
            resend = self.config.session.on_peer_reset == "resend"
            unacked = list(old.unacked())
            data = tuple(u.data for u in unacked)
            self._delivery = None
            self._held = []
            self._session_token = None
            self._emit(SessionReset, unacked=data, resent=resend, reason=reason)
            if resend:
                # Ahead of anything buffered since: they were sent first.
                held = list(self._buffer.clear())
                for item in (*data, *(m.data for m in held)):
                    _, evicted = self._buffer.add(item, now)
                    for message in evicted:
                        self._emit(MessageBufferOverflow, data=message.data)
                self._arm_buffer_timer()
            elif data:
                self._emit(
                    MessagesUndelivered,
                    messages=data,
                    reason=reason,
                    maybe_delivered=any(u.transmitted for u in unacked),
                )
        self._layered = remote is not None
        self._plain_limit = remote_max_message_size(offer_sdp)
        if remote is not None:
            self._peer_token = remote.token
            if self._session_token is None:
                self._session_token = self._new_token()
