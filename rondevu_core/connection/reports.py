"""`PeerReports`: the connection's handlers of what the WebRTC driver reports.

Descriptions and candidates go to the ICE exchange; ICE and peer-connection states,
and the data channel opening, closing and carrying messages, move the link.  A report
that arrives out of turn is a ``protocol:error`` event (the table says which are in
turn), never an exception.
"""

from __future__ import annotations

from rondevu_core.connection.attempts import Attempts
from rondevu_core.connection.states import EARLY_FRAMES_MAX, Call, Role, State, Timer
from rondevu_core.delivery.machine import FrameReceived
from rondevu_core.delivery.negotiation import add_session_attribute, looks_like_sdp
from rondevu_core.events import (
    DataChannelClose,
    DataChannelError,
    DataChannelOpen,
    IceCandidateLocal,
    IceCandidateRejected,
    IceConnectionState,
    IceGatheringState,
    Message,
    PeerConnectionState,
)
from rondevu_core.ice_exchange import StopPolling
from rondevu_core.inputs import (
    ChannelAnnounced,
    ChannelError,
    ChannelMessage,
    IceConnectionStateChanged,
    IceGatheringStateChanged,
    Input,
    LocalCandidate,
    LocalDescriptionReady,
    PeerConnectionStateChanged,
    PeerError,
    RemoteCandidateRejected,
    RemoteDescriptionSet,
)
from rondevu_core.rpc import Method, RpcRequest, Urgency


class PeerReports(Attempts):
    """One handler per peer report kind; see the module docstring."""

    __slots__ = ()

    def _on_local_description(self, event: LocalDescriptionReady) -> None:
        if self._local_sdp is not None:
            self._violation("local description reported twice")
            return
        assert self._exchange is not None
        assert self._pc is not None
        self._local_sdp = event.sdp
        if self.role is Role.OFFERER and self._epoch is not None and looks_like_sdp(event.sdp):
            self._local_sdp = add_session_attribute(event.sdp, self._epoch())
        self._exchange.handle(event)
        if event.complete:
            self._deadlines.cancel(Timer.GATHERING)
        if self.role is Role.ANSWERER:
            assert self._offer_id is not None
            sdp = event.sdp
            if self._layered and self._session_token is not None:
                sdp = add_session_attribute(sdp, self._session_token)
            self._call(
                Call.ANSWER,
                RpcRequest(
                    method=Method.ANSWER_OFFER,
                    params={
                        "serviceFqn": str(self.service),
                        "offerId": self._offer_id,
                        "sdp": sdp,
                    },
                    urgency=Urgency.URGENT,  # the offerer waits for it
                ),
            )
            self._set_state(State.SIGNALING)
            self._maybe_connected(event.now)

    def _on_remote_description_set(self, event: RemoteDescriptionSet) -> None:
        assert self._exchange is not None
        self._exchange.handle(event)

    def _on_local_candidate(self, event: LocalCandidate) -> None:
        assert self._exchange is not None
        self._emit(IceCandidateLocal, candidate=event.candidate)
        self._exchange.handle(event)

    def _on_gathering_state(self, event: IceGatheringStateChanged) -> None:
        self._emit(IceGatheringState, state=event.state)
        if event.state == "complete":
            self._deadlines.cancel(Timer.GATHERING)
            self._emit(IceCandidateLocal, candidate=None)

    def _on_ice_state(self, event: IceConnectionStateChanged) -> None:
        state = event.state
        self._emit(IceConnectionState, state=state)
        if state in ("connected", "completed"):
            self._ice_ok = True
            if self._exchange is not None:
                self._exchange.handle(StopPolling())  # every needed candidate is in (B12)
            self._maybe_connected(event.now)
        elif state == "checking":
            if self.state is State.SIGNALING:
                self._set_state(State.CHECKING)
        elif state == "disconnected":
            if self.state is State.CONNECTED:
                self._soft_drop(event.now, "ICE disconnected")
            else:
                self._ice_ok = False
        elif state == "failed":
            self._fail(event.now, "ICE connection failed")
        elif state == "closed":
            self._fail(event.now, "ICE transport closed")

    def _on_pc_state(self, event: PeerConnectionStateChanged) -> None:
        self._emit(PeerConnectionState, state=event.state)
        if event.state == "failed":
            self._fail(event.now, "Peer connection failed")
        elif event.state == "closed":
            # Not asked for (a pc we closed is no longer current): the peer vanished.
            self._fail(event.now, "Peer connection closed")
        elif event.state == "disconnected" and self.state is State.CONNECTED:
            self._soft_drop(event.now, "Peer connection disconnected")

    def _on_channel_announced(self, event: ChannelAnnounced) -> None:
        pass  # `handle` has chosen the channel (`_adopts`); it opens later

    def _on_channel_open(self, event: Input) -> None:
        if self._channel_open:
            return  # a message reported before the open already counted as the open
        self._channel_open = True
        self._emit(DataChannelOpen)
        self._maybe_connected(event.now)

    def _on_channel_closed(self, event: Input) -> None:
        self._channel_open = False
        self._emit(DataChannelClose)
        self._fail(event.now, "Data channel closed")

    def _on_channel_message(self, event: ChannelMessage) -> None:
        if not self._channel_open:
            # Data arrives only on an open channel: the stack reported the open late
            # (its reports are not ordered across channel and transport).
            self._on_channel_open(event)
        if self._layered:
            if self._delivery is not None:
                # Also while its channel is not yet up again (a reconnection whose ICE
                # report is late): the session takes frames at any time.
                self._delivery.handle(FrameReceived(now=event.now, data=event.data))
                self._pump(event.now)
            elif len(self._early_frames) < EARLY_FRAMES_MAX:
                # The first link: the peer saw it up before our side did, and the session
                # starts with our `ChannelUp`.  These frames are its, never messages.
                self._early_frames.append(event.data)
            else:
                self._violation("too many frames before the link was up; frame dropped")
            return
        self._emit(Message, data=event.data)

    def _on_channel_error(self, event: ChannelError) -> None:
        self._emit(DataChannelError, error=event.error)

    def _on_peer_error(self, event: PeerError) -> None:
        self._fail(event.now, f"{event.operation} failed: {event.error}")

    def _on_candidate_rejected(self, event: RemoteCandidateRejected) -> None:
        # One bad candidate from the other side does not doom the attempt: others may
        # work, and the connection timeout still bounds it.  Reported, never swallowed.
        self._emit(IceCandidateRejected, reason=event.reason)
