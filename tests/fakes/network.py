"""An in-memory stand-in for WebRTC, plus the simulation loop that joins everything.

For the sans-IO core's tests only.  `Sim` owns two fake clocks, a queue of
timed deliveries, the in-process `FakeSignalingServer`, and a `FakeNetwork` of fake peer
connections.  Each `Endpoint` runs one machine (a `Connection` or an `OfferPool`) the
way a real driver would: it performs every action the machine queues (RPCs against the
fake server, peer operations against the fake network), delivers the resulting inputs
after a small latency, and keeps the machine's timer.  `Sim.run_until` advances the
clock from one delivery or deadline to the next, so no test ever sleeps.

The two clocks are as far apart as on a real machine: ``now`` (what every input carries)
is monotonic and starts near zero, while the fake server and every `RpcResult.unix_ms`
use `Sim.wall`, a Unix time.  A machine that compared one with the other would break here.

Fake WebRTC semantics.  Every description is a small SDP naming its peer connection
(``a=x-fake:<uid>``); candidates encode the uid in their address (``10.0.<uid>.1``).
Two peer connections connect once each holds the other's description *and* at least one
of the other's candidates (from the SDP or added).  ``trickle=False`` behaves like
aiortc (all candidates inside the SDP, ``complete=True``, no candidate events);
``trickle=True`` like a browser (bare SDP, then `LocalCandidate` events).  `sever` cuts
a link: aiortc-style peers learn it only 30 s later as ``connectionState=closed``;
browser-style peers see ICE ``disconnected`` after 1 s and ``failed`` after 15 s.

The fake also checks the machines: an action on a closed peer connection, `SendData`
on a channel that is not open, or any action from a machine that was already CLOSED
raises `AssertionError`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rondevu_core.actions import (
    Action,
    AddRemoteCandidate,
    ClosePeerConnection,
    CreateAnswer,
    CreateDataChannel,
    CreateOffer,
    CreatePeerConnection,
    PeerAction,
    SendData,
    SendRpc,
    SetRemoteDescription,
)
from rondevu_core.connection import Connection, State
from rondevu_core.events import Event
from rondevu_core.inputs import (
    ChannelClosed,
    ChannelMessage,
    ChannelOpen,
    IceConnectionStateChanged,
    IceGatheringStateChanged,
    Input,
    LocalCandidate,
    LocalDescriptionReady,
    PeerConnectionStateChanged,
    PeerError,
    RemoteDescriptionSet,
    RpcResult,
)
from rondevu_core.pool import OfferPool, PoolState
from rondevu_core.rpc import Method
from tests.fakes.signaling import FakeSignalingServer

__all__ = ["Endpoint", "FakeNetwork", "FakePc", "Sim"]

START_MS = 1_765_700_000_000
"""The wall clock (Unix ms) when a simulation starts."""
MONOTONIC_START_MS = 10_000
"""The monotonic clock when a simulation starts (a host up for ten seconds)."""
RPC_LATENCY = 20
PEER_LATENCY = 2
ICE_DELAY = 40

Machine = Connection | OfferPool


@dataclass(slots=True)
class FakePc:
    """One fake RTCPeerConnection."""

    uid: int
    endpoint: Endpoint
    pc_id: int
    local_sdp: str | None = None
    remote_uid: int | None = None
    remote_candidate_uids: set[int] = field(default_factory=set)
    has_channel: bool = False
    connected: bool = False
    closed: bool = False
    severed: bool = False

    def sdp(self) -> str:
        lines = ["v=0", f"o=- {self.uid} 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
        lines += ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=mid:0"]
        lines.append(f"a=x-fake:{self.uid}")
        return "\r\n".join(lines) + "\r\n"

    def candidates(self) -> list[dict[str, Any]]:
        return [
            {
                "candidate": f"candidate:{n} 1 udp 2122260223 10.0.{self.uid}.1 {5000 + n} "
                "typ host",
                "sdpMid": "0",
                "sdpMLineIndex": 0,
            }
            for n in (1, 2)
        ]


def _uid_of_sdp(sdp: str) -> int | None:
    for line in sdp.split("\r\n"):
        if line.startswith("a=x-fake:"):
            return int(line.split(":", 1)[1])
    return None


def _uid_of_candidate(text: str) -> int:
    address = text.split()[4]
    return int(address.split(".")[2])


class FakeNetwork:
    """Fake peer connections and the links between them."""

    def __init__(self, sim: Sim, *, trickle: bool) -> None:
        self.sim = sim
        self.trickle = trickle
        self.pcs: dict[int, FakePc] = {}
        self._by_key: dict[tuple[int, int], FakePc] = {}
        self._next_uid = 1

    def pc(self, endpoint: Endpoint, pc_id: int) -> FakePc:
        pc = self._by_key.get((id(endpoint), pc_id))
        assert pc is not None, f"action on unknown pc {pc_id}"
        assert not pc.closed, f"action on closed pc {pc_id}"
        return pc

    def perform(self, endpoint: Endpoint, action: Action) -> None:
        if isinstance(action, CreatePeerConnection):
            pc = FakePc(uid=self._next_uid, endpoint=endpoint, pc_id=action.pc_id)
            self._next_uid += 1
            self.pcs[pc.uid] = pc
            self._by_key[id(endpoint), action.pc_id] = pc
            return
        assert isinstance(action, PeerAction), action
        pc = self.pc(endpoint, action.pc_id)
        if isinstance(action, CreateDataChannel):
            pc.has_channel = True
        elif isinstance(action, CreateOffer | CreateAnswer):
            self._describe(pc)
        elif isinstance(action, SetRemoteDescription):
            uid = _uid_of_sdp(action.sdp)
            if uid is None or uid not in self.pcs:
                self._to(pc, PeerError, operation="setRemoteDescription", error="bad sdp")
                return
            pc.remote_uid = uid
            for line in action.sdp.split("\r\n"):
                if line.startswith("a=candidate:"):
                    pc.remote_candidate_uids.add(_uid_of_candidate(line[2:]))
            self._to(pc, RemoteDescriptionSet)
            self._check(pc)
        elif isinstance(action, AddRemoteCandidate):
            pc.remote_candidate_uids.add(_uid_of_candidate(action.candidate["candidate"]))
            self._check(pc)
        elif isinstance(action, SendData):
            assert pc.connected, "SendData on a channel that is not open"
            peer = self.pcs.get(pc.remote_uid or -1)
            if peer is not None and not pc.severed and not peer.closed:
                self._to(peer, ChannelMessage, data=action.data)
        elif isinstance(action, ClosePeerConnection):
            pc.closed = True
            peer = self.pcs.get(pc.remote_uid or -1)
            if pc.connected and peer is not None and not peer.closed and not pc.severed:
                # An orderly close reaches the peer as the channel closing.
                self._to(peer, ChannelClosed)
        else:
            raise AssertionError(f"unexpected action {action!r}")

    def _to(self, pc: FakePc, cls: type[Input], delay: int = PEER_LATENCY, **fields: Any) -> None:
        self.sim.schedule(delay, pc.endpoint, cls, pc, pc_id=pc.pc_id, **fields)

    def _describe(self, pc: FakePc) -> None:
        sdp = pc.sdp()
        if self.trickle:
            pc.local_sdp = sdp
            self._to(pc, LocalDescriptionReady, sdp=sdp, complete=False)
            for n, cand in enumerate(pc.candidates()):
                self._to(pc, LocalCandidate, 5 + n, candidate=cand)
            self._to(pc, IceGatheringStateChanged, 10, state="complete")
        else:
            lines = [f"a={c['candidate']}" for c in pc.candidates()]
            sdp = sdp + "\r\n".join(lines) + "\r\n"
            pc.local_sdp = sdp
            self._to(pc, LocalDescriptionReady, sdp=sdp, complete=True)

    def _check(self, pc: FakePc) -> None:
        peer = self.pcs.get(pc.remote_uid or -1)
        if peer is None or pc.connected or peer.connected or pc.closed or peer.closed:
            return
        if peer.remote_uid != pc.uid:
            return
        if peer.uid not in pc.remote_candidate_uids or pc.uid not in peer.remote_candidate_uids:
            return
        for side in (pc, peer):
            side.connected = True
            self._to(side, IceConnectionStateChanged, ICE_DELAY // 2, state="checking")
            ice_late, open_late = side.endpoint.late_link_reports_ms
            self._to(side, IceConnectionStateChanged, ICE_DELAY + ice_late, state="connected")
            self._to(side, ChannelOpen, ICE_DELAY + 5 + open_late)

    def sever(self, pc: FakePc, *, browser: bool = False) -> None:
        """Cut the link of ``pc`` and its peer, as a vanished peer or a dead network does."""
        peer = self.pcs.get(pc.remote_uid or -1)
        for side in (pc, peer):
            if side is None or side.closed:
                continue
            side.severed = True
            if browser:
                self._to(side, IceConnectionStateChanged, 1000, state="disconnected")
                self._to(side, IceConnectionStateChanged, 15000, state="failed")
            else:
                self._to(side, PeerConnectionStateChanged, 30000, state="closed")

    def live_pc(self, endpoint: Endpoint) -> FakePc:
        """The endpoint's connected, open peer connection (exactly one expected)."""
        found = [
            p
            for p in self.pcs.values()
            if p.endpoint is endpoint and p.connected and not p.closed and not p.severed
        ]
        assert len(found) == 1, found
        return found[0]


class Endpoint:
    """One machine driven as a real driver would drive it."""

    def __init__(self, sim: Sim, name: str, username: str, machine: Machine) -> None:
        self.sim = sim
        self.name = name
        self.username = username
        self.machine = machine
        self.events: list[Event] = []
        self.actions: list[Action] = []
        self.rpc_count = 0
        self.late_link_reports_ms = (0, 0)
        """Extra delay before this side hears ICE ``connected`` and the channel open, as
        a real stack reports them late and in either order, while the peer's frames may
        already arrive."""

    def closed(self) -> bool:
        m = self.machine
        return m.state is (State.CLOSED if isinstance(m, Connection) else PoolState.CLOSED)

    def feed(self, event: Input) -> None:
        was_closed = self.closed()
        self.machine.handle(event)
        self.pump(was_closed)

    def fire_timer(self, now: int) -> None:
        was_closed = self.closed()
        self.machine.handle_timer(now)
        self.pump(was_closed)

    def pump(self, was_closed: bool = False) -> None:
        if was_closed:
            assert self.machine.outbox.pending_actions == 0, "action after CLOSED"
        while (action := self.machine.next_action()) is not None:
            self.actions.append(action)
            if isinstance(action, SendRpc):
                self.rpc_count += 1
                outcome = self.sim.server.call(self.username, action.request, self.sim.wall())
                self.sim.schedule(
                    RPC_LATENCY, self, RpcResult, None, call_id=action.call_id, outcome=outcome
                )
            else:
                self.sim.network.perform(self, action)
        while (event := self.machine.next_event()) is not None:
            self.events.append(event)

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def rpcs(self, method: Method) -> int:
        return sum(1 for a in self.actions if isinstance(a, SendRpc) and a.request.method is method)


class Sim:
    """The fake clock, the delivery queue, the fake server and the fake network."""

    def __init__(
        self,
        *,
        trickle: bool = False,
        server_mode: str = "ours",
        monotonic_start_ms: int = MONOTONIC_START_MS,
        wall_start_ms: int = START_MS,
        client_wall_skew_ms: int = 0,
    ) -> None:
        self.now = monotonic_start_ms
        self._monotonic_start = monotonic_start_ms
        self._wall_start = wall_start_ms
        self.client_wall_skew_ms = client_wall_skew_ms
        """How far the clients' wall clock (`RpcResult.unix_ms`) runs ahead of the server's."""
        self.server = FakeSignalingServer(mode="ours" if server_mode == "ours" else "upstream")
        self.network = FakeNetwork(self, trickle=trickle)
        self.endpoints: list[Endpoint] = []
        self._queue: list[
            tuple[int, int, Endpoint, type[Input], FakePc | None, dict[str, Any]]
        ] = []
        self._seq = 0

    def wall(self) -> int:
        """The server's wall clock (Unix ms): it moves with ``now`` from its start."""
        return self._wall_start + (self.now - self._monotonic_start)

    def add(self, name: str, username: str, machine: Machine) -> Endpoint:
        endpoint = Endpoint(self, name, username, machine)
        self.endpoints.append(endpoint)
        return endpoint

    def schedule(
        self,
        delay: int,
        endpoint: Endpoint,
        cls: type[Input],
        pc: FakePc | None = None,
        **fields: Any,
    ) -> None:
        """Deliver ``cls(now=…, **fields)`` to ``endpoint`` after ``delay`` ms."""
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, endpoint, cls, pc, fields))

    def step(self) -> bool:
        """Deliver the next input or fire the next deadline; False when nothing is left."""
        timers = [(t, e) for e in self.endpoints if (t := e.machine.get_timer()) is not None]
        next_timer = min(timers, key=lambda x: x[0]) if timers else None
        if self._queue and (next_timer is None or self._queue[0][0] <= next_timer[0]):
            at, _, endpoint, cls, pc, fields = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            if pc is not None and pc.closed:
                return True  # the driver dropped its handlers with the pc
            if cls is RpcResult:
                fields = {**fields, "unix_ms": self.wall() + self.client_wall_skew_ms}
            endpoint.feed(cls(now=self.now, **fields))
            return True
        if next_timer is None:
            return False
        at, endpoint = next_timer
        self.now = max(self.now, at)
        endpoint.fire_timer(self.now)
        return True

    def run_until(self, done: Callable[[], bool], *, limit_ms: int = 600_000) -> bool:
        """Step until ``done()`` or until ``limit_ms`` of fake time passed."""
        deadline = self.now + limit_ms
        while not done():
            if self.now > deadline or not self.step():
                return done()
        return True

    def run_for(self, ms: int) -> None:
        """Step through ``ms`` of fake time."""
        end = self.now + ms
        while True:
            timers = [t for e in self.endpoints if (t := e.machine.get_timer()) is not None]
            nxt = min([*timers, *(q[0] for q in self._queue[:1])], default=None)
            if nxt is None or nxt > end or not self.step():
                break
        self.now = max(self.now, end)
