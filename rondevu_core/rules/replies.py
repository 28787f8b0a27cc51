"""The parts of server results the machines read, checked strictly (§7).

Each parser takes the ``result`` of an `RpcOk` (arbitrary JSON) and returns small typed
values, or raises `ProtocolError` when the shape is wrong.  Only the fields a machine
needs are checked; extra fields are ignored, as the 0.18.9 client ignores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rondevu_core.errors import ProtocolError
from rondevu_core.rules.sdp import parse_wire_candidate

__all__ = [
    "FetchedOffer",
    "PolledAnswer",
    "Publication",
    "RemoteCandidate",
    "parse_candidates",
    "parse_fetched_offer",
    "parse_poll_answers",
    "parse_published",
    "poll_candidate_times",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchedOffer:
    """A getService (direct or random) result: the offer to answer."""

    offer_id: str
    sdp: str
    username: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolledAnswer:
    """One item of poll ``answers``."""

    offer_id: str
    answerer_id: str
    sdp: str
    answered_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Publication:
    """A publishService result: the offers stored, and what a republish will keep."""

    offers: tuple[tuple[str, str], ...]
    """``(offerId, sdp)`` per offer, in the order sent."""
    keeps_answered_offers: bool
    """The server's ``keepsAnsweredOffers`` (our extension): a republish replaces only
    unanswered offers, so it cannot delete a handshake in progress (B8).  False when
    absent, as from 0.5.4."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteCandidate:
    """One item of getIceCandidates ``candidates``; ``candidate`` is RTCIceCandidateInit."""

    candidate: Mapping[str, Any]
    created_at: int


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{what}: expected an object")
    return value


def _string(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{what}: missing or invalid {key}")
    return value


def _timestamp(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    # bool is an int subclass; a JSON true is not a timestamp.
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ProtocolError(f"{what}: missing or invalid {key}")
    if not -(2**53) <= value <= 2**53:
        raise ProtocolError(f"{what}: {key} out of range")
    return int(value)


def parse_fetched_offer(result: object) -> FetchedOffer:
    """getService direct/random → the offer (§7.3)."""
    obj = _mapping(result, "getService")
    username = obj.get("username")
    return FetchedOffer(
        offer_id=_string(obj, "offerId", "getService"),
        sdp=_string(obj, "sdp", "getService"),
        username=username if isinstance(username, str) and username else None,
    )


def parse_published(result: object) -> Publication:
    """publishService → its offers in the order sent, and the server's promise (§7.2).

    Only a JSON ``true`` counts as ``keepsAnsweredOffers``: anything else falls back to
    0.5.4's replace-everything rule, the safe reading of a server that did not promise.
    """
    obj = _mapping(result, "publishService")
    offers = obj.get("offers")
    if not isinstance(offers, list):
        raise ProtocolError("publishService: missing offers")
    out = []
    for item in offers:
        entry = _mapping(item, "publishService offer")
        out.append((_string(entry, "offerId", "publishService"), _string(entry, "sdp", "offer")))
    return Publication(
        offers=tuple(out), keeps_answered_offers=obj.get("keepsAnsweredOffers") is True
    )


def parse_poll_answers(result: object) -> list[PolledAnswer]:
    """poll → its ``answers`` (§7.7); ``iceCandidates`` is read per offer instead."""
    obj = _mapping(result, "poll")
    answers = obj.get("answers")
    if not isinstance(answers, list):
        raise ProtocolError("poll: missing answers")
    out = []
    for item in answers:
        entry = _mapping(item, "poll answer")
        out.append(
            PolledAnswer(
                offer_id=_string(entry, "offerId", "poll answer"),
                answerer_id=_string(entry, "answererId", "poll answer"),
                sdp=_string(entry, "sdp", "poll answer"),
                answered_at=_timestamp(entry, "answeredAt", "poll answer"),
            )
        )
    return out


def poll_candidate_times(result: object) -> list[int]:
    """poll → the ``createdAt`` of every candidate in its ``iceCandidates``, skipping
    whatever is malformed: a held poll's cursor must pass them too, or the server, which
    counts them as news, would answer the next one at once."""
    ice = result.get("iceCandidates") if isinstance(result, dict) else None
    if not isinstance(ice, dict):
        return []
    times: list[int] = []
    for items in ice.values():
        for item in items if isinstance(items, list) else ():
            at = item.get("createdAt") if isinstance(item, dict) else None
            if isinstance(at, int) and not isinstance(at, bool) and at >= 0:
                times.append(at)
    return times


def parse_candidates(result: object) -> tuple[list[RemoteCandidate], int]:
    """getIceCandidates → ``(valid candidates, number of malformed items skipped)`` (§7.9).

    Any authenticated user can add candidates to any offer (S4), so one malformed item
    is skipped rather than failing the whole reply; the count lets the caller report it.
    """
    obj = _mapping(result, "getIceCandidates")
    items = obj.get("candidates")
    if not isinstance(items, list):
        raise ProtocolError("getIceCandidates: missing candidates")
    out: list[RemoteCandidate] = []
    skipped = 0
    for item in items:
        try:
            entry = _mapping(item, "candidate item")
            created_at = _timestamp(entry, "createdAt", "candidate item")
            candidate = _mapping(entry.get("candidate"), "candidate")
            if parse_wire_candidate(candidate).is_end_of_candidates:
                raise ProtocolError("end-of-candidates marker")
        except ProtocolError:
            skipped += 1
            continue
        out.append(RemoteCandidate(candidate=candidate, created_at=created_at))
    return out, skipped
