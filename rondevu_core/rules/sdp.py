"""ICE candidates in SDP and on the wire (docs/protocol.md §9), as pure transformations.

Three shapes meet here:
- the SDP attribute line ``a=candidate:<foundation> <component> <transport> <priority>
  <address> <port> typ <type> [raddr <a>] [rport <p>] [<name> <value>]...`` (RFC 8839),
  parsed into a `Candidate`;
- the wire object a browser sends and the server relays opaquely,
  ``{"candidate": "candidate:…", "sdpMid": "0", "sdpMLineIndex": 0}``, as `WireCandidate`;
- a whole session description, from which `candidates_from_sdp` lists the candidates
  (an aiortc peer embeds all of them in its SDP, because it gathers inside
  setLocalDescription) and `strip_candidates` removes them (to trickle them instead).

Invariants: `Candidate.parse(c.attribute) == c`; `parse_wire_candidate` accepts only the
documented shape and raises `ProtocolError` (remote misbehaviour) for anything else, never
another exception; an empty ``candidate`` string is the end-of-candidates marker.
Lengths are capped because every one of these strings comes from a remote peer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rondevu_core.errors import ProtocolError

__all__ = [
    "MAX_CANDIDATE_LENGTH",
    "Candidate",
    "WireCandidate",
    "candidates_from_sdp",
    "gathering_complete",
    "parse_wire_candidate",
    "strip_candidates",
]

MAX_CANDIDATE_LENGTH = 1024
"""Longest accepted candidate string; real ones are under 200 characters."""

_PREFIX = "candidate:"
_TYPES = frozenset({"host", "srflx", "prflx", "relay"})
_RESERVED = frozenset({"raddr", "rport", "tcptype", "typ"})
_MAX_MID_LENGTH = 32  # RFC 8843 recommends short mids; browsers use "0", "1", ...
_MAX_UFRAG_LENGTH = 256  # RFC 8839 allows 4 to 256 ice-chars


def _bad(reason: str) -> ProtocolError:
    return ProtocolError(f"invalid ICE candidate: {reason}")


def _int_field(text: str, name: str, low: int, high: int) -> int:
    if not text.isascii() or not text.isdigit():
        raise _bad(f"{name} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise _bad(f"{name} out of range")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """The fields of one ICE candidate attribute (RFC 8839 §6)."""

    foundation: str
    component: int
    transport: str
    """``udp`` or ``tcp`` as written (case kept)."""
    priority: int
    address: str
    """An IP address or a hostname (browsers hide host addresses behind mDNS ``.local``)."""
    port: int
    type: str
    """``host``, ``srflx``, ``prflx`` or ``relay``."""
    related_address: str | None = None
    related_port: int | None = None
    tcptype: str | None = None
    extensions: tuple[tuple[str, str], ...] = ()
    """Other name/value pairs in order, e.g. ``("generation", "0")``."""

    def __post_init__(self) -> None:
        words = [self.foundation, self.transport, self.address, self.type]
        words += [w for w in (self.related_address, self.tcptype) if w is not None]
        words += [w for pair in self.extensions for w in pair]
        if any(not w or any(c.isspace() for c in w) for w in words):
            raise ValueError("candidate fields must be non-empty words")
        if any(name in _RESERVED for name, _ in self.extensions):
            raise ValueError("raddr/rport/tcptype/typ are fields, not extensions")

    @classmethod
    def parse(cls, text: str) -> Candidate:
        """Parse ``candidate:…`` (with or without a leading ``a=``); raise `ProtocolError`."""
        if len(text) > MAX_CANDIDATE_LENGTH:
            raise _bad("too long")
        if text.startswith("a="):
            text = text[2:]
        if not text.startswith(_PREFIX):
            raise _bad("missing 'candidate:' prefix")
        bits = text[len(_PREFIX) :].split()
        if len(bits) < 8 or bits[6] != "typ":
            raise _bad("too few fields")
        if len(bits) % 2:
            raise _bad("dangling extension name")
        related_address: str | None = None
        related_port: int | None = None
        tcptype: str | None = None
        extensions: list[tuple[str, str]] = []
        pairs = list(zip(bits[8::2], bits[9::2], strict=True))
        names = [name for name, _ in pairs if name in _RESERVED]
        if len(names) != len(set(names)) or "typ" in names:
            raise _bad("repeated field")
        for name, value in pairs:
            if name == "raddr":
                related_address = value
            elif name == "rport":
                related_port = _int_field(value, "rport", 0, 65535)
            elif name == "tcptype":
                tcptype = value
            else:
                extensions.append((name, value))
        if bits[7] not in _TYPES:
            raise _bad("unknown candidate type")
        try:
            return cls(
                foundation=bits[0],
                component=_int_field(bits[1], "component", 1, 256),
                transport=bits[2],
                priority=_int_field(bits[3], "priority", 0, 2**32 - 1),
                address=bits[4],
                port=_int_field(bits[5], "port", 0, 65535),
                type=bits[7],
                related_address=related_address,
                related_port=related_port,
                tcptype=tcptype,
                extensions=tuple(extensions),
            )
        except ValueError as exc:  # a field __post_init__ rejects
            raise _bad("malformed field") from exc

    @property
    def attribute(self) -> str:
        """The ``candidate:…`` string (the wire ``candidate`` value)."""
        words = [
            f"{_PREFIX}{self.foundation}",
            str(self.component),
            self.transport,
            str(self.priority),
            self.address,
            str(self.port),
            "typ",
            self.type,
        ]
        if self.related_address is not None:
            words += ["raddr", self.related_address]
        if self.related_port is not None:
            words += ["rport", str(self.related_port)]
        if self.tcptype is not None:
            words += ["tcptype", self.tcptype]
        for name, value in self.extensions:
            words += [name, value]
        return " ".join(words)


@dataclass(frozen=True, slots=True, kw_only=True)
class WireCandidate:
    """One candidate as browsers send it (``RTCIceCandidate.toJSON()``), §9."""

    candidate: str
    """``candidate:…``, or ``""`` for end-of-candidates."""
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None
    username_fragment: str | None = None

    @property
    def is_end_of_candidates(self) -> bool:
        """True for the empty-candidate end-of-candidates marker."""
        return self.candidate == ""

    def parsed(self) -> Candidate:
        """The candidate's fields; raise `ProtocolError` if malformed or end-of-candidates."""
        return Candidate.parse(self.candidate)

    def to_json(self) -> dict[str, object]:
        """The JSON object the original client sends: candidate, sdpMLineIndex, sdpMid."""
        out: dict[str, object] = {
            "candidate": self.candidate,
            "sdpMLineIndex": self.sdp_mline_index,
            "sdpMid": self.sdp_mid,
        }
        if self.username_fragment is not None:
            out["usernameFragment"] = self.username_fragment
        return out


def parse_wire_candidate(obj: object) -> WireCandidate:
    """Validate a remote candidate object (§9) and return it; raise `ProtocolError`.

    ``candidate`` must be a string (``""`` or ``candidate:…`` that `Candidate.parse`
    accepts); ``sdpMid`` a short string or null; ``sdpMLineIndex`` a small non-negative
    integer or null; at least one of the two must be set unless it is end-of-candidates;
    ``usernameFragment`` is optional.  Other keys are ignored, as browsers ignore them.
    """
    if not isinstance(obj, Mapping):
        raise _bad("not an object")
    text = obj.get("candidate")
    mid = obj.get("sdpMid")
    index = obj.get("sdpMLineIndex")
    ufrag = obj.get("usernameFragment")
    if not isinstance(text, str):
        raise _bad("candidate is not a string")
    if mid is not None and (not isinstance(mid, str) or len(mid) > _MAX_MID_LENGTH):
        raise _bad("sdpMid is not a short string")
    # bool is an int subclass; JSON true is not an index.
    if index is not None and (
        not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 1023
    ):
        raise _bad("sdpMLineIndex is not a small non-negative integer")
    if ufrag is not None and (not isinstance(ufrag, str) or len(ufrag) > _MAX_UFRAG_LENGTH):
        raise _bad("usernameFragment is not a short string")
    if text:
        Candidate.parse(text)
        if mid is None and index is None:
            raise _bad("neither sdpMid nor sdpMLineIndex is set")
    return WireCandidate(
        candidate=text, sdp_mid=mid, sdp_mline_index=index, username_fragment=ufrag
    )


def candidates_from_sdp(sdp: str) -> tuple[WireCandidate, ...]:
    """Every ``a=candidate`` line of ``sdp`` as a wire candidate, in order.

    ``sdpMLineIndex`` counts ``m=`` sections from 0 and ``sdpMid`` is that section's
    ``a=mid`` (None if it has none).  Lines before the first ``m=`` are not candidates.
    Malformed candidate lines raise `ProtocolError`.
    """
    found: list[WireCandidate] = []
    index = -1
    section: list[str] = []
    mid: str | None = None

    def flush() -> None:
        for text in section:
            Candidate.parse(text)
            found.append(WireCandidate(candidate=text, sdp_mid=mid, sdp_mline_index=index))

    for line in (raw.rstrip("\r") for raw in sdp.split("\n")):
        if line.startswith("m="):
            flush()
            index, section, mid = index + 1, [], None
        elif index >= 0 and line.startswith("a=candidate:"):
            section.append(line[2:])
        elif index >= 0 and line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
    flush()
    return tuple(found)


def gathering_complete(sdp: str) -> bool:
    """True when ``sdp`` says its side will send no more candidates: every ``m=``
    section (or the session part, for all of them) carries ``a=end-of-candidates``
    (RFC 8840), as a description made after gathering completed does.  No ``m=``
    section: False (nothing to judge by)."""
    session_done = False
    sections: list[bool] = []
    for line in (raw.rstrip("\r") for raw in sdp.split("\n")):
        if line.startswith("m="):
            sections.append(False)
        elif line == "a=end-of-candidates":
            if sections:
                sections[-1] = True
            else:
                session_done = True
    return bool(sections) and (session_done or all(sections))


def strip_candidates(sdp: str) -> str:
    """``sdp`` without its ``a=candidate`` and ``a=end-of-candidates`` lines.

    Every other line is kept byte for byte, with its own line ending, so the result is
    what a trickle-ICE peer puts in its offer or answer.
    """
    # Split on LF only: SDP lines end in CRLF (or LF), and any other character that
    # str.splitlines treats as a break is line content here.
    return "\n".join(
        line
        for line in sdp.split("\n")
        if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    )
