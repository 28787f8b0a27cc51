"""When a publisher must publish again: its offers are gone from the server.

Offers vanish from a server behind their owner's back: the server restarted (with an
in-memory store it forgets everything), they expired, or another process with the same
identity published the same service, which replaces them.  ``poll`` cannot tell: it
answers "no news" just the same.  So the offer pool looks its own service up (a direct
``getService``, one small call in the same batch as its poll, understood by every
server) once per poll interval, and `PresenceRule` reads the reply.

The rule must never republish over a handshake in progress on a server without
``keepsAnsweredOffers`` (B8: that deletes the answered offer).  An offer answered since
the last poll is the one innocent way for ours to look absent, and the next poll
reports its answer (it then leaves the pool's published set).  Hence:

- ``Service not found`` while we hold published offers: every offer of the service is
  gone, answered ones included, so nothing can be broken: republish at once.
- ``no available offers``, or an available offer that is not one of ours: republish
  only when the next look (after another poll) says the same.
- Anything else (our offer found, a transport failure, a temporary server error, a
  malformed reply): no verdict; the count of strikes restarts after a healthy look.
"""

from __future__ import annotations

from rondevu_core.errors import ProtocolError
from rondevu_core.rpc import RpcFailed, RpcOutcome
from rondevu_core.rules.replies import parse_fetched_offer

__all__ = ["REASON_GONE", "REASON_NO_OFFERS", "REASON_REPLACED", "PresenceRule"]

REASON_GONE = "service gone from the server"
REASON_NO_OFFERS = "none of our offers is available on the server"
REASON_REPLACED = "our offers were replaced (another process with this identity?)"

_STRIKES = 2
"""Looks in a row that must agree before an ambiguous absence counts."""


class PresenceRule:
    """Reads the replies of a publisher's look at its own service; see the module doc."""

    __slots__ = ("_reason", "_strikes")

    def __init__(self) -> None:
        self._strikes = 0
        self._reason: str | None = None

    @property
    def strikes(self) -> int:
        """Ambiguous absences seen in a row (reset by a healthy or inconclusive look)."""
        return self._strikes

    def reset(self) -> None:
        """Forget past looks (after a publication: they described the old offers)."""
        self._strikes = 0
        self._reason = None

    def judge(self, outcome: RpcOutcome, published: frozenset[str]) -> str | None:
        """The reason to republish now, given the look's ``outcome`` and the ids of the
        offers we believe are published and unanswered; None to leave things be."""
        if not published:
            self.reset()  # nothing of ours should be there: nothing to miss
            return None
        reason = self._absence(outcome, published)
        if reason is None:
            self.reset()
            return None
        if reason == REASON_GONE:
            self.reset()
            return reason
        self._strikes = self._strikes + 1 if reason == self._reason else 1
        self._reason = reason
        if self._strikes >= _STRIKES:
            self.reset()
            return reason
        return None

    @staticmethod
    def _absence(outcome: RpcOutcome, published: frozenset[str]) -> str | None:
        if isinstance(outcome, RpcFailed):
            if outcome.transport:
                return None
            if outcome.error.startswith("Service not found"):
                return REASON_GONE
            if "no available offers" in outcome.error:
                return REASON_NO_OFFERS
            return None
        try:
            offer = parse_fetched_offer(outcome.result)
        except ProtocolError:
            return None
        return None if offer.offer_id in published else REASON_REPLACED
