"""`AiortcPeer`: one aiortc RTCPeerConnection behind a small set of operations.

Role: a thin I/O layer.  Each method performs one peer-connection operation the core
asks for; everything that happens is reported as the core's own peer input
(`rondevu_core.inputs.PeerInput`: `LocalDescriptionReady`, `ChannelOpen`, ...), stamped
with the peer's ``pc_id`` and the injected monotonic ``clock``, through the ``on_input``
callback, in the order aiortc produces it.  There is no vocabulary of its own to
translate.  The peer makes no protocol decision: it does not retry, time out, buffer,
reorder or choose between data channels (each report names its channel; the core
decides which one it speaks on).

Error families (STYLE.md point 4):
- local misuse (an operation after `close`, an answer with no offer pending, a candidate
  before any remote description, sending on a channel that is not open) raises
  `PeerStateError` / `PeerClosedError` at the caller;
- remote misbehaviour (a malformed or unacceptable offer, answer or candidate) is
  reported - `RemoteCandidateRejected` for a candidate, `PeerError` (operation ``remote
  offer`` / ``remote answer``) for a description - and the operation returns None/False.

Invariants: ``on_input`` is called synchronously from aiortc's callbacks and must neither
block nor raise; after `close` returns, the peer connection, its sockets and its tasks
are gone and ``on_input`` is not called again; `close` is idempotent.

aiortc facts this layer passes through rather than hides (`PeerConnectionStateChanged`):
no ``connected``/``disconnected`` ICE states, and a vanished peer is reported only after
about 30 s of failed consent checks, as a jump to ``closed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Literal

from aiortc import RTCDataChannel, RTCIceCandidate, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidStateError

from rondevu_aiortc._config import rtc_configuration
from rondevu_aiortc._hosts import (
    check_host_candidates,
    normalise_host_addresses,
    restrict_host_addresses,
)
from rondevu_core.buffer import Payload
from rondevu_core.errors import ProtocolError, RondevuError
from rondevu_core.inputs import (
    ChannelAnnounced,
    ChannelClosed,
    ChannelError,
    ChannelMessage,
    ChannelOpen,
    IceConnectionStateChanged,
    IceGatheringStateChanged,
    LocalDescriptionReady,
    PeerConnectionStateChanged,
    PeerError,
    PeerInput,
    RemoteCandidateRejected,
    RemoteDescriptionSet,
)
from rondevu_core.rules.ice import IceConfiguration, IceTransportPolicy
from rondevu_core.rules.sdp import WireCandidate, candidates_from_sdp, parse_wire_candidate

__all__ = ["AiortcPeer", "InputCallback", "PeerClosedError", "PeerStateError", "monotonic_ms"]

_DRAIN_CHECK_SECONDS = 0.005

logger = logging.getLogger("rondevu_aiortc")

InputCallback = Callable[[PeerInput], None]
"""Receives every report, as a core `PeerInput`; called synchronously, must not block or
raise."""


def monotonic_ms() -> int:
    """The default clock of the reports' ``now``: monotonic milliseconds."""
    return time.monotonic_ns() // 1_000_000


class PeerStateError(RondevuError):
    """An operation was called in a state where it cannot apply (local misuse)."""


class PeerClosedError(PeerStateError):
    """An operation was called after `AiortcPeer.close`."""


def _reason(exc: BaseException) -> str:
    # A short, stable description: the exception type, plus its text when it has one.
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class AiortcPeer:
    """One WebRTC peer connection (aiortc), driven by explicit operations.

    ``ice`` is the STUN/TURN configuration (`rondevu_core.rules.ice`; use
    ``rondevu_core.rules.ice.NO_ICE_SERVERS`` for none — never a missing list, see
    `rtc_configuration`).  ``host_addresses`` (opt-in) restricts host candidates to the
    given IP addresses, e.g. ``["127.0.0.1"]`` to keep all traffic on loopback, which
    aioice cannot do by itself (see ``rondevu_aiortc._hosts``).  It restricts host
    candidates only: configured STUN/TURN servers are still contacted (from those
    addresses), and it cannot be combined with the relay transport policy, which gathers
    no host candidates.  ``pc_id`` is the id every report carries (the core's
    `CreatePeerConnection.pc_id`); ``clock`` gives each report its ``now``.  Construct
    inside a running asyncio event loop.
    """

    def __init__(
        self,
        *,
        ice: IceConfiguration,
        on_input: InputCallback,
        pc_id: int = 0,
        clock: Callable[[], int] = monotonic_ms,
        host_addresses: Sequence[str] | None = None,
    ) -> None:
        self._hosts = None if host_addresses is None else normalise_host_addresses(host_addresses)
        if self._hosts is not None and ice.transport_policy is IceTransportPolicy.RELAY:
            raise ValueError("host_addresses cannot be combined with the relay transport policy")
        self._on_input = on_input
        self._pc_id = pc_id
        self._clock = clock
        self._pc = RTCPeerConnection(rtc_configuration(ice))
        self._channels: dict[int, RTCDataChannel] = {}
        self._closed = False
        pc = self._pc
        pc.on("icegatheringstatechange", self._on_gathering_state)
        pc.on("iceconnectionstatechange", self._on_ice_state)
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("datachannel", self._on_remote_channel)

    # -- state, read-only -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once `close` has been called."""
        return self._closed

    @property
    def connection_state(self) -> str:
        """aiortc's current ``connectionState``."""
        return str(self._pc.connectionState)

    @property
    def local_description(self) -> str | None:
        """The local SDP (offer or answer, candidates embedded), or None before one."""
        description = self._pc.localDescription
        return None if description is None else str(description.sdp)

    @property
    def raw_peer_connection(self) -> RTCPeerConnection:
        """The wrapped aiortc ``RTCPeerConnection`` (raw access: bypasses this driver)."""
        return self._pc

    @property
    def raw_data_channel(self) -> RTCDataChannel | None:
        """The first data channel (created or announced), or None."""
        return self._channels.get(0)

    def raw_channel(self, channel: int) -> RTCDataChannel | None:
        """The aiortc data channel the reports call ``channel``, or None."""
        return self._channels.get(channel)

    def local_candidates(self) -> tuple[WireCandidate, ...]:
        """The local candidates in wire shape (§9), extracted from the local SDP.

        For sending through ``addIceCandidates`` to a trickle-ICE (browser) peer.  Empty
        before the local description is set.
        """
        sdp = self.local_description
        return () if sdp is None else candidates_from_sdp(sdp)

    # -- operations ------------------------------------------------------------------

    def create_data_channel(
        self,
        label: str,
        *,
        ordered: bool = True,
        max_retransmits: int | None = None,
        max_packet_life_time: int | None = None,
        protocol: str = "",
    ) -> ChannelAnnounced:
        """Create a data channel (before `create_offer`, so the offer negotiates SCTP).

        ``max_retransmits`` and ``max_packet_life_time`` (ms) select partial reliability;
        at most one may be set (`ValueError`).  Reports the channel as `ChannelAnnounced`
        (``local``, with its options as aiortc took them) and returns that report;
        `ChannelOpen` follows once the remote peer has acknowledged it.
        """
        self._check_open()
        if max_retransmits is not None and max_packet_life_time is not None:
            raise ValueError("set at most one of max_retransmits and max_packet_life_time")
        channel = self._pc.createDataChannel(
            label,
            ordered=ordered,
            maxRetransmits=max_retransmits,
            maxPacketLifeTime=max_packet_life_time,
            protocol=protocol,
        )
        return self._adopt(channel, local=True)

    async def create_offer(self) -> str:
        """Create the offer and set it as local description; return its SDP.

        Gathering completes inside this call, so the SDP embeds every local candidate.
        Reports `LocalDescriptionReady` (``complete``: aiortc's SDP holds every candidate).
        """
        self._check_open()
        return await self._set_local("offer")

    async def set_remote_offer(self, sdp: str) -> bool:
        """Apply a remote offer and report `RemoteDescriptionSet`; False (and `PeerError`,
        operation ``remote offer``) if it is bad.

        The first half of `accept_offer`, for drivers that report the remote description
        before asking for the answer (the core's `SetRemoteDescription` then
        `CreateAnswer`).
        """
        self._check_open()
        return await self._set_remote("offer", sdp)

    async def create_answer(self) -> str:
        """Create the answer to the applied remote offer and set it; return its SDP.

        Gathering completes inside this call, as for `create_offer`.  Reports
        `LocalDescriptionReady`.
        """
        self._check_open()
        return await self._set_local("answer")

    async def accept_offer(self, sdp: str) -> str | None:
        """Apply a remote offer, then create and set the answer; return the answer SDP.

        A remote offer aiortc cannot apply is reported as `PeerError` (operation ``remote
        offer``) and None is returned.  Reports `RemoteDescriptionSet`, then
        `LocalDescriptionReady`.
        """
        self._check_open()
        if not await self._set_remote("offer", sdp):
            return None
        return await self._set_local("answer")

    async def set_remote_answer(self, sdp: str) -> bool:
        """Apply the remote answer to our offer and report `RemoteDescriptionSet`; False
        (and `PeerError`, operation ``remote answer``) if it is bad.

        Raises `PeerStateError` when no local offer is pending (for example a second
        answer: the core must latch on the first one, B6).
        """
        self._check_open()
        return await self._set_remote("answer", sdp)

    async def add_remote_candidate(self, candidate: Mapping[str, object] | None) -> bool:
        """Add one trickled remote candidate in wire shape (§9); None ends the candidates.

        ``{"candidate": "candidate:…", "sdpMid": "0", "sdpMLineIndex": 0}`` as browsers
        send it; an empty ``candidate`` string also means end-of-candidates.  A malformed
        candidate, an address that is neither an IP literal nor an mDNS ``.local`` name
        (or any ``.local`` name when ``host_addresses`` is set, since resolving it would
        query the LAN), or an ``sdpMid`` this connection does not have is reported as
        `RemoteCandidateRejected` and False is returned.  Raises
        `PeerStateError` before a remote description is set: the core must hold early
        candidates, as aiortc would silently drop them.
        """
        self._check_open()
        if self._pc.remoteDescription is None:
            raise PeerStateError("add_remote_candidate needs a remote description first")
        if candidate is None:
            await self._pc.addIceCandidate(None)
            return True
        try:
            wire = parse_wire_candidate(candidate)
            rtc_candidate = None if wire.is_end_of_candidates else self._rtc_candidate(wire)
        except ProtocolError as exc:
            self._emit(
                RemoteCandidateRejected(now=self._clock(), pc_id=self._pc_id, reason=str(exc))
            )
            return False
        await self._pc.addIceCandidate(rtc_candidate)
        return True

    def send(self, channel: int, data: Payload) -> None:
        """Send a text (`str`) or binary (`bytes`) message on an open channel."""
        self._check_open()
        if not isinstance(data, str | bytes):
            raise TypeError("data must be str or bytes")
        dc = self._channels.get(channel)
        if dc is None:
            raise PeerStateError(f"no data channel {channel}")
        if dc.readyState != "open":
            raise PeerStateError(f"data channel {channel} is {dc.readyState}, not open")
        dc.send(data)

    async def close(self, linger: float = 0.0) -> None:
        """Close channels, transports and sockets; idempotent, also while closing.

        With ``linger`` > 0 (seconds), first wait up to that long until every message
        already passed to `send` has left and the peer acknowledged it: aiortc's close
        aborts the SCTP association, which drops whatever is still queued.  The final
        ``closed`` state events are still reported; nothing is reported after this
        returns.
        """
        if linger > 0 and not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(linger):
                    await self._all_sent()
        self._closed = True
        # aiortc's close is itself idempotent and makes a concurrent caller wait.
        await self._pc.close()

    async def _all_sent(self) -> None:
        """Return once nothing sent is queued in a channel or unacknowledged in SCTP.

        aiortc signals neither condition, so this checks every few milliseconds; the
        caller bounds the wait.  The SCTP queues are aiortc internals, read defensively:
        without them only the channels' ``bufferedAmount`` is waited for.
        """
        while self._pc.connectionState not in ("closed", "failed"):  # nothing can leave then
            channels_idle = all(
                dc.bufferedAmount == 0 for dc in self._channels.values() if dc.readyState == "open"
            )
            sctp = getattr(self._pc, "sctp", None)
            sctp_idle = sctp is None or not any(
                getattr(sctp, name, None)
                for name in ("_data_channel_queue", "_outbound_queue", "_sent_queue")
            )
            if channels_idle and sctp_idle:
                return
            await asyncio.sleep(_DRAIN_CHECK_SECONDS)

    async def __aenter__(self) -> AiortcPeer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PeerClosedError("the peer connection is closed")

    def _emit(self, report: PeerInput) -> None:
        self._on_input(report)

    async def _set_local(self, kind: Literal["offer", "answer"]) -> str:
        pc = self._pc
        if self._hosts is not None:
            # Transports exist now (data channel created / remote offer applied) and
            # gathering starts inside setLocalDescription: the only window to restrict.
            restrict_host_addresses(pc, self._hosts)
        try:
            description = await (pc.createOffer() if kind == "offer" else pc.createAnswer())
            await pc.setLocalDescription(description)
        except InvalidStateError as exc:
            raise self._state_error(exc) from exc
        sdp = str(pc.localDescription.sdp)
        if self._hosts is not None:
            try:
                check_host_candidates(sdp, self._hosts)
            except RuntimeError:
                await self.close()
                raise
        self._emit(
            LocalDescriptionReady(now=self._clock(), pc_id=self._pc_id, sdp=sdp, complete=True)
        )
        return sdp

    async def _set_remote(self, kind: Literal["offer", "answer"], sdp: str) -> bool:
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except InvalidStateError as exc:
            raise self._state_error(exc) from exc
        except Exception as exc:
            # aiortc's SDP parser signals bad input with ValueError, AssertionError,
            # IndexError, KeyError...: all of it is the remote peer's doing here.
            self._emit(
                PeerError(
                    now=self._clock(),
                    pc_id=self._pc_id,
                    operation=f"remote {kind}",
                    error=_reason(exc),
                )
            )
            return False
        self._emit(RemoteDescriptionSet(now=self._clock(), pc_id=self._pc_id))
        return True

    def _state_error(self, exc: InvalidStateError) -> PeerStateError:
        if self._closed:
            return PeerClosedError("the peer connection is closed")
        return PeerStateError(_reason(exc))

    def _rtc_candidate(self, wire: WireCandidate) -> RTCIceCandidate:
        parsed = wire.parsed()
        if not _is_address(parsed.address):
            # aioice resolves only mDNS names; any other name would fail deep inside it.
            raise ProtocolError("invalid ICE candidate: address is not an IP or .local name")
        if self._hosts is not None and parsed.address.endswith(".local"):
            # Resolving it would send mDNS queries on the LAN, off the allowed addresses.
            raise ProtocolError("invalid ICE candidate: mDNS name while host_addresses is set")
        mids = {t.mid for t in self._pc.getTransceivers()}
        if self._pc.sctp is not None:
            mids.add(self._pc.sctp.mid)
        if wire.sdp_mid is not None and wire.sdp_mid not in mids:
            # aiortc would ignore it silently; say so instead.
            raise ProtocolError("invalid ICE candidate: unknown sdpMid")
        return RTCIceCandidate(
            component=parsed.component,
            foundation=parsed.foundation,
            ip=parsed.address,
            port=parsed.port,
            priority=parsed.priority,
            protocol=parsed.transport,
            type=parsed.type,
            relatedAddress=parsed.related_address,
            relatedPort=parsed.related_port,
            sdpMid=wire.sdp_mid,
            sdpMLineIndex=wire.sdp_mline_index,
            tcpType=parsed.tcptype,
        )

    def _adopt(self, dc: RTCDataChannel, *, local: bool) -> ChannelAnnounced:
        # Channels are named by a small integer (0, 1, ... in order of local creation or
        # remote announcement): labels need not be unique, and SCTP stream ids are known
        # only once the association is up.
        number = len(self._channels)
        self._channels[number] = dc
        pc_id, clock = self._pc_id, self._clock
        announced = ChannelAnnounced(
            now=clock(),
            pc_id=pc_id,
            channel=number,
            label=str(dc.label),
            local=local,
            ordered=bool(dc.ordered),
            max_retransmits=dc.maxRetransmits,
            max_packet_life_time=dc.maxPacketLifeTime,
            protocol=str(dc.protocol),
        )
        dc.on("open", lambda: self._emit(ChannelOpen(now=clock(), pc_id=pc_id, channel=number)))
        dc.on("close", lambda: self._emit(ChannelClosed(now=clock(), pc_id=pc_id, channel=number)))
        dc.on(
            "message",
            lambda data: self._emit(
                ChannelMessage(now=clock(), pc_id=pc_id, channel=number, data=data)
            ),
        )
        dc.on("error", lambda exc: self._report_channel_error(number, exc))
        self._emit(announced)
        return announced

    def _report_channel_error(self, channel: int, exc: BaseException) -> None:
        try:
            self._emit(
                ChannelError(
                    now=self._clock(), pc_id=self._pc_id, channel=channel, error=_reason(exc)
                )
            )
        except Exception:
            # The callback failed while hearing about its own failure; re-raising would
            # make the emitter report it again, forever.
            logger.exception("on_input raised while reporting a data channel error")

    def _on_remote_channel(self, dc: RTCDataChannel) -> None:
        announced = self._adopt(dc, local=False)
        if dc.readyState == "open":  # aiortc announces remote channels already open
            self._emit(ChannelOpen(now=self._clock(), pc_id=self._pc_id, channel=announced.channel))

    def _on_gathering_state(self) -> None:
        state = str(self._pc.iceGatheringState)
        self._emit(IceGatheringStateChanged(now=self._clock(), pc_id=self._pc_id, state=state))

    def _on_ice_state(self) -> None:
        state = str(self._pc.iceConnectionState)
        self._emit(IceConnectionStateChanged(now=self._clock(), pc_id=self._pc_id, state=state))

    def _on_connection_state(self) -> None:
        state = str(self._pc.connectionState)
        self._emit(PeerConnectionStateChanged(now=self._clock(), pc_id=self._pc_id, state=state))


def _is_address(host: str) -> bool:
    if host.endswith(".local"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
