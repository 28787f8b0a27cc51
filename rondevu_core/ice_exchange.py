"""`IceExchange`: the ICE candidate exchange for one peer connection (§9, B1-B5, B12, B20).

One `IceExchange` lives as long as one peer connection attempt.  It is a machine of the
core's one contract (`rondevu_core.machine`), layered under its owner the way aioquic's
``h3`` sits on ``quic``: the owning `Connection` forwards the inputs that concern it
unchanged (`LocalDescriptionReady`, `LocalCandidate`, `RemoteDescriptionSet`, and the
`RpcResult` of each call it `owns`) and steers it with the commands below
(`StartPolling`, `StopPolling`, `EnableUploads`, `ReuploadCandidates`, `EndExchange`).
It queues `SendRpc` / `AddRemoteCandidate` actions and ICE events on the `Outbox` it
shares with its owner, so ``next_action`` / ``next_event`` drain that shared outbox.

Local side.  Candidates are recorded from the moment the peer connection exists.  Those
embedded in the local SDP (aiortc puts every candidate there) count as already sent, so
each candidate reaches the server once.  Trickled ones are held until uploads are
enabled - the offer id is known (offerer: published; answerer: answer accepted) - then
flushed in one addIceCandidates call (B3).  At most one upload is in flight; candidates
arriving meanwhile go out together in the next one.

Remote side.  Polling starts as soon as the owner sends `StartPolling` (right when the
offer id is known, B1), runs single-flight (at most one getIceCandidates in flight),
applies no role filter (the server already returns only the other role's candidates,
B2), and stops when ICE connects, when the exchange ends, or after
``ice_polling_timeout_ms`` on the *local* clock (B12).  The cursor is taken only from
server ``createdAt`` values (B4) and belongs to this stream alone (B20); with
``strict_ice_timestamps`` off it stays at 0 because server 0.5.4 timestamps collide (B5).
Candidates are de-duplicated by their ``candidate`` string either way.  Remote candidates
are handed to the peer connection only after the remote description is set.

Long polling.  With ``long_poll_wait_ms`` set (the server holds calls: ours,
docs/long-polling.md) each getIceCandidates carries ``waitMs`` and goes alone in its
request (``Urgency.HELD``); the next one leaves as soon as the reply is in, unless the
reply came back early with nothing new (the server did not hold it: at a bound, shutting
down, or news we could not use), in which case the plain polling interval comes first,
so nothing ever spins.  The cursor then advances strictly (a server that holds calls is
ours, whose timestamps are strictly increasing).  A remote description that says its
gathering is complete (``a=end-of-candidates`` everywhere, as aiortc's are) announces
that no candidate will follow, so there is nothing to wait for and no poll is made.
Against a server that does not hold calls, polling is exactly the original's.

Invariants: no action after `EndExchange`; at most one poll and one upload in flight; a
remote candidate string is added at most once; a local candidate string is uploaded at
most once per publication of the offer (`ReuploadCandidates` starts a new publication
after a republish deleted the server's copy, §7.2).

Size.  About 480 lines with the owner's commands: the upload and polling halves share
the call bookkeeping (`owns`, abandoned calls) and the end of the exchange, so they
stay one machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rondevu_core.actions import AddRemoteCandidate, CancelRpc, SendRpc
from rondevu_core.config import ConnectionConfig
from rondevu_core.errors import ProtocolError, UsageError
from rondevu_core.events import (
    IceCandidateRemote,
    IcePollingStarted,
    IcePollingStopped,
    ProtocolViolation,
    SignalingError,
)
from rondevu_core.inputs import (
    LocalCandidate,
    LocalDescriptionReady,
    RemoteDescriptionSet,
    RpcResult,
)
from rondevu_core.outbox import Deadlines, DrainsOutbox, Outbox
from rondevu_core.rpc import Method, RpcFailed, RpcOutcome, RpcRequest, Urgency
from rondevu_core.rules.replies import parse_candidates
from rondevu_core.rules.sdp import candidates_from_sdp, gathering_complete
from rondevu_core.rules.signing import TIMESTAMP_TOLERANCE_MS

__all__ = [
    "EnableUploads",
    "EndExchange",
    "ExchangeCommand",
    "ExchangeInput",
    "IceExchange",
    "ReuploadCandidates",
    "StartPolling",
    "StopPolling",
]


# -- the owner's commands ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeCommand:
    """Base of what the owner tells the exchange (its other inputs are forwarded core
    inputs).  Only a command that starts a deadline carries ``now``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartPolling(ExchangeCommand):
    """Begin polling the other side's candidates (idempotent; nothing until the offer id
    is known).  ``remote_sdp``: the other side's description, when known: if the server
    holds calls and it says gathering is complete, no candidate can follow and nothing
    is polled (see the module docstring)."""

    now: int
    remote_sdp: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StopPolling(ExchangeCommand):
    """Stop polling (ICE connected, attempt over); a reply still in flight is ignored."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnableUploads(ExchangeCommand):
    """The offer id is known and the peer may use our candidates: flush held ones."""

    offer_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReuploadCandidates(ExchangeCommand):
    """A republish replaced the offer on the server: upload every trickled candidate again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EndExchange(ExchangeCommand):
    """The attempt is over: stop polling, drop held work, never act again."""


ExchangeInput = (
    LocalDescriptionReady
    | LocalCandidate
    | RemoteDescriptionSet
    | RpcResult
    | StartPolling
    | StopPolling
    | EnableUploads
    | ReuploadCandidates
    | EndExchange
)
"""Everything `IceExchange.handle` accepts."""


class _Timer(Enum):
    POLL = "poll"
    POLL_TIMEOUT = "poll_timeout"


class IceExchange(DrainsOutbox):
    """ICE exchange for one peer connection; see the module docstring."""

    __slots__ = (
        "_abandoned",
        "_closed",
        "_config",
        "_cursor",
        "_deadlines",
        "_held_remote",
        "_known_local",
        "_outbox",
        "_pending_local",
        "_poll_call",
        "_poll_sent_at",
        "_polling",
        "_remote_ready",
        "_seen_remote",
        "_sent_local",
        "_service_fqn",
        "_upload_batch",
        "_upload_call",
        "_uploads_enabled",
        "connection_id",
        "offer_id",
        "pc_id",
    )

    def __init__(
        self,
        *,
        outbox: Outbox,
        config: ConnectionConfig,
        connection_id: int,
        pc_id: int,
        service_fqn: str,
        offer_id: str | None = None,
    ) -> None:
        self._outbox = outbox
        self._config = config
        self.connection_id = connection_id
        self.pc_id = pc_id
        self._service_fqn = service_fqn
        self.offer_id = offer_id
        self._deadlines: Deadlines[_Timer] = Deadlines()
        self._closed = False
        self._abandoned: set[int] = set()
        # local side
        self._known_local: list[Mapping[str, Any]] = []
        self._pending_local: list[Mapping[str, Any]] = []
        self._sent_local: set[str] = set()
        self._uploads_enabled = False
        self._upload_call: int | None = None
        self._upload_batch: list[Mapping[str, Any]] = []
        # remote side
        self._polling = False
        self._poll_call: int | None = None
        self._poll_sent_at = 0
        self._cursor = 0
        self._seen_remote: set[str] = set()
        self._held_remote: list[Mapping[str, Any]] = []
        self._remote_ready = False

    # -- queries ---------------------------------------------------------------------

    @property
    def polling(self) -> bool:
        """True while remote-candidate polling runs."""
        return self._polling

    @property
    def cursor(self) -> int:
        """The ``since`` the next getIceCandidates will carry."""
        return self._cursor

    def owns(self, call_id: int) -> bool:
        """True when ``call_id`` is one of this exchange's calls still unanswered."""
        return (
            call_id == self._poll_call or call_id == self._upload_call or call_id in self._abandoned
        )

    def calls_in_flight(self) -> list[int]:
        """The ids of this exchange's unanswered calls."""
        live = [c for c in (self._poll_call, self._upload_call) if c is not None]
        return live + list(self._abandoned)

    # -- the Machine contract -----------------------------------------------------------

    def handle(self, input: ExchangeInput, /) -> None:
        """Consume one input; what it causes waits in the shared outbox."""
        match input:
            case RpcResult(call_id=call_id, outcome=outcome, now=now, unix_ms=unix_ms):
                self._on_result(call_id, outcome, now, unix_ms)
            case LocalCandidate(candidate=candidate):
                self._on_local_candidate(candidate)
            case LocalDescriptionReady(sdp=sdp):
                self._on_local_sdp(sdp)
            case RemoteDescriptionSet():
                self._on_remote_description_set()
            case StartPolling(now=now, remote_sdp=remote_sdp):
                self._start_polling(now, remote_sdp)
            case StopPolling():
                self._stop_polling()
            case EnableUploads(offer_id=offer_id):
                self._enable_uploads(offer_id)
            case ReuploadCandidates():
                self._reupload()
            case EndExchange():
                self._end()
            case _:
                raise UsageError(f"IceExchange does not take {type(input).__name__}")

    def get_timer(self) -> int | None:
        """The next deadline (monotonic ms), or None."""
        return self._deadlines.next()

    def handle_timer(self, now: int) -> None:
        """Run every deadline due at ``now``."""
        for timer in self._deadlines.pop_due(now):
            if timer is _Timer.POLL_TIMEOUT:
                self._stop_polling()
            elif self._polling and self._poll_call is None:
                self._poll(now)
                self._flush_uploads()  # retry uploads that failed meanwhile

    # -- local candidates ---------------------------------------------------------------

    def _on_local_sdp(self, sdp: str) -> None:
        # The local description is set: its embedded candidates need no upload.
        try:
            embedded = candidates_from_sdp(sdp)
        except ProtocolError:
            return  # our own stack's SDP: a line we cannot parse is simply not matched
        self._sent_local.update(c.candidate for c in embedded)

    def _on_local_candidate(self, candidate: Mapping[str, Any]) -> None:
        # A trickled local candidate; uploaded once uploads are enabled.
        if self._closed:
            return
        text = candidate.get("candidate")
        if not isinstance(text, str) or not text:
            return  # end-of-candidates marker: never sent (§9)
        if text in self._sent_local or any(c.get("candidate") == text for c in self._known_local):
            return
        self._known_local.append(candidate)
        self._pending_local.append(candidate)
        self._flush_uploads()

    def _enable_uploads(self, offer_id: str) -> None:
        if self._closed:
            return
        self.offer_id = offer_id
        self._uploads_enabled = True
        self._flush_uploads()

    def _reupload(self) -> None:
        if self._closed:
            return
        held = {id(c) for c in self._pending_local}
        self._pending_local.extend(c for c in self._known_local if id(c) not in held)
        self._flush_uploads()

    def _flush_uploads(self) -> None:
        if not self._uploads_enabled or self._upload_call is not None or not self._pending_local:
            return
        batch, self._pending_local = self._pending_local, []
        call_id = self._outbox.new_id()
        self._upload_call = call_id
        self._upload_batch = batch
        self._outbox.act(
            SendRpc(
                call_id=call_id,
                request=RpcRequest(
                    method=Method.ADD_ICE_CANDIDATES,
                    params={
                        "serviceFqn": self._service_fqn,
                        "offerId": self.offer_id,
                        "candidates": [dict(c) for c in batch],
                    },
                    urgency=Urgency.URGENT,  # the peer may be waiting on them
                ),
            )
        )

    # -- remote candidates --------------------------------------------------------------

    def _start_polling(self, now: int, remote_sdp: str | None) -> None:
        if self._closed or self._polling or self.offer_id is None:
            return
        if self._config.long_poll_wait_ms and remote_sdp and gathering_complete(remote_sdp):
            return
        self._polling = True
        self._outbox.emit(IcePollingStarted(connection_id=self.connection_id))
        self._deadlines.set(_Timer.POLL_TIMEOUT, now + self._config.ice_polling_timeout_ms)
        self._poll(now)

    def _stop_polling(self) -> None:
        if not self._polling:
            return
        self._polling = False
        if self._poll_call is not None and self._config.long_poll_wait_ms:
            # Held: the server would keep it for nothing; cancelled, no reply comes.
            self._outbox.act(CancelRpc(call_id=self._poll_call))
            self._poll_call = None
        elif self._poll_call is not None:
            self._abandoned.add(self._poll_call)
            self._poll_call = None
        self._deadlines.clear()
        self._outbox.emit(IcePollingStopped(connection_id=self.connection_id))

    def _on_remote_description_set(self) -> None:
        # Remote candidates may now be added: hand over the held ones.
        if self._closed:
            return
        self._remote_ready = True
        held, self._held_remote = self._held_remote, []
        for candidate in held:
            self._add_remote(candidate)

    def _poll(self, now: int) -> None:
        call_id = self._outbox.new_id()
        self._poll_call = call_id
        self._poll_sent_at = now
        params: dict[str, Any] = {
            "serviceFqn": self._service_fqn,
            "offerId": self.offer_id,
            "since": self._cursor,
        }
        urgency = Urgency.URGENT  # the handshake waits on the peer's candidates
        if self._config.long_poll_wait_ms:
            params["waitMs"] = self._config.long_poll_wait_ms
            urgency = Urgency.HELD
        self._outbox.act(
            SendRpc(
                call_id=call_id,
                request=RpcRequest(
                    method=Method.GET_ICE_CANDIDATES, params=params, urgency=urgency
                ),
            )
        )

    def _add_remote(self, candidate: Mapping[str, Any]) -> None:
        self._outbox.act(AddRemoteCandidate(pc_id=self.pc_id, candidate=candidate))
        self._outbox.emit(IceCandidateRemote(connection_id=self.connection_id, candidate=candidate))

    # -- results and timers --------------------------------------------------------------

    def _on_result(self, call_id: int, outcome: RpcOutcome, now: int, unix_ms: int) -> None:
        # One of our calls (see `owns`).  ``now`` is the monotonic clock (deadlines);
        # ``unix_ms`` the wall clock when the reply arrived, against which the server's
        # ``createdAt`` stamps are checked.
        if call_id == self._upload_call:
            self._upload_call = None
            batch, self._upload_batch = self._upload_batch, []
            if isinstance(outcome, RpcFailed):
                self._report("addIceCandidates", outcome.error)
                if outcome.transport:
                    # No server answer: retry with the next poll tick or candidate, not
                    # at once (a dead network would otherwise spin).  A `reupload` while
                    # this call was in flight may have queued some of them already.
                    held = {id(c) for c in self._pending_local}
                    self._pending_local[:0] = [c for c in batch if id(c) not in held]
                return
            self._flush_uploads()
            return
        if call_id != self._poll_call:
            self._abandoned.discard(call_id)  # a poll abandoned by _stop_polling
            return
        self._poll_call = None
        cursor_before, seen_before = self._cursor, len(self._seen_remote)
        strict = self._config.strict_ice_timestamps or self._config.long_poll_wait_ms > 0
        if isinstance(outcome, RpcFailed):
            self._report("getIceCandidates", outcome.error)
            if "Offer not found" in outcome.error:
                # The offer is gone (republished, expired, deleted): nothing more will come.
                self._stop_polling()
                return
        else:
            try:
                candidates, skipped = parse_candidates(outcome.result)
            except ProtocolError as error:
                self._outbox.emit(ProtocolViolation(connection_id=self.connection_id, error=error))
            else:
                if skipped:
                    self._outbox.emit(
                        ProtocolViolation(
                            connection_id=self.connection_id,
                            error=ProtocolError(f"{skipped} malformed remote candidate(s) ignored"),
                        )
                    )
                for item in candidates:
                    if (
                        strict
                        and self._cursor < item.created_at <= unix_ms + TIMESTAMP_TOLERANCE_MS
                    ):
                        # A far-future createdAt (a glitching server) would move the
                        # cursor past every candidate still to come: not trusted.
                        self._cursor = item.created_at
                    text = item.candidate["candidate"]
                    if text in self._seen_remote:
                        continue
                    self._seen_remote.add(text)
                    if self._remote_ready:
                        self._add_remote(item.candidate)
                    else:
                        self._held_remote.append(item.candidate)
        if not self._polling:
            return
        wait = self._config.long_poll_wait_ms
        news = self._cursor != cursor_before or len(self._seen_remote) != seen_before
        was_held = now - self._poll_sent_at >= wait // 2  # not answered early
        if wait and not isinstance(outcome, RpcFailed) and (news or was_held):
            self._poll(now)
        else:
            self._deadlines.set(_Timer.POLL, now + self._config.ice_polling_interval_ms)

    def _end(self) -> None:
        self._stop_polling()
        self._closed = True
        self._deadlines.clear()
        self._pending_local.clear()
        self._held_remote.clear()
        self._upload_call = None
        self._upload_batch = []

    def _report(self, operation: str, error: str) -> None:
        self._outbox.emit(
            SignalingError(connection_id=self.connection_id, operation=operation, error=error)
        )
