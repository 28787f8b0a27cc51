"""ICE candidates in SDP and on the wire (rondevu_core.rules.sdp, docs/protocol.md §9)."""

from __future__ import annotations

import json

import pytest
from aiortc.sdp import candidate_from_sdp
from hypothesis import given, settings
from hypothesis import strategies as st

from rondevu_core.errors import ProtocolError
from rondevu_core.rules.sdp import (
    MAX_CANDIDATE_LENGTH,
    Candidate,
    WireCandidate,
    candidates_from_sdp,
    parse_wire_candidate,
    strip_candidates,
)

words = st.from_regex(r"\A[A-Za-z0-9+/.:-]{1,16}\Z")
ports = st.integers(0, 65535)
extension_names = words.filter(lambda w: w not in {"raddr", "rport", "tcptype", "typ"})
candidates = st.builds(
    Candidate,
    foundation=words,
    component=st.integers(1, 256),
    transport=st.sampled_from(["udp", "tcp", "UDP"]),
    priority=st.integers(0, 2**32 - 1),
    address=words,
    port=ports,
    type=st.sampled_from(["host", "srflx", "prflx", "relay"]),
    related_address=st.none() | words,
    related_port=st.none() | ports,
    tcptype=st.none() | st.sampled_from(["active", "passive", "so"]),
    extensions=st.lists(st.tuples(extension_names, words), max_size=3).map(tuple),
)

CHROME = (
    "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 "
    "rport 0 generation 0 ufrag sEMT network-cost 999"
)
AIORTC_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=application 40000 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\n"
    "a=mid:0\r\na=sctp-port:5000\r\n"
    "a=candidate:abc 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"
    "a=candidate:abd 1 udp 2130706431 127.0.0.1 40001 typ host\r\n"
    "a=end-of-candidates\r\na=ice-ufrag:TxLj\r\na=setup:actpass\r\n"
)


@given(candidates)
def test_attribute_then_parse_round_trips(candidate: Candidate) -> None:
    assert Candidate.parse(candidate.attribute) == candidate
    assert Candidate.parse("a=" + candidate.attribute) == candidate


@given(candidates)
def test_agrees_with_aiortc_parser(candidate: Candidate) -> None:
    theirs = candidate_from_sdp(candidate.attribute.removeprefix("candidate:"))
    assert (theirs.foundation, theirs.component, theirs.protocol) == (
        candidate.foundation,
        candidate.component,
        candidate.transport,
    )
    assert (theirs.priority, theirs.ip, theirs.port, theirs.type) == (
        candidate.priority,
        candidate.address,
        candidate.port,
        candidate.type,
    )
    assert (theirs.relatedAddress, theirs.relatedPort, theirs.tcpType) == (
        candidate.related_address,
        candidate.related_port,
        candidate.tcptype,
    )


def test_parses_a_browser_candidate() -> None:
    candidate = Candidate.parse(CHROME)
    assert candidate.address == "203.0.113.7"
    assert (candidate.type, candidate.related_address, candidate.related_port) == (
        "srflx",
        "0.0.0.0",
        0,
    )
    assert candidate.extensions == (("generation", "0"), ("ufrag", "sEMT"), ("network-cost", "999"))
    assert candidate.attribute == CHROME


@pytest.mark.parametrize(
    "text",
    [
        "",
        "candidate:",
        "abc 1 udp 1 1.2.3.4 5 typ host",
        "candidate:abc 1 udp 1 1.2.3.4 5 host host",
        "candidate:abc 0 udp 1 1.2.3.4 5 typ host",
        "candidate:abc 1 udp -1 1.2.3.4 5 typ host",
        "candidate:abc 1 udp 1 1.2.3.4 65536 typ host",
        "candidate:abc 1 udp 1 1.2.3.4 5 typ bogus",
        "candidate:abc 1 udp 1 1.2.3.4 5 typ host generation",
        "candidate:abc 1 udp 1 1.2.3.4 5 typ host raddr a raddr b",
        "candidate:abc 1 udp 1 1.2.3.4 5 typ host rport x",
        "candidate:abc 1 udp 1 1.2.3.4 5 typ host typ host",
        "candidate:abc 1 udp \u0661 1.2.3.4 5 typ host",  # a non-ASCII digit
        "candidate:abc 1 udp 1 1.2.3.4 5 typ host " + "x " * MAX_CANDIDATE_LENGTH,
    ],
)
def test_rejects_malformed_candidates(text: str) -> None:
    with pytest.raises(ProtocolError):
        Candidate.parse(text)


def test_wire_candidate_json_shape() -> None:
    wire = WireCandidate(candidate=CHROME, sdp_mid="0", sdp_mline_index=0)
    assert wire.to_json() == {"candidate": CHROME, "sdpMLineIndex": 0, "sdpMid": "0"}
    assert parse_wire_candidate(json.loads(json.dumps(wire.to_json()))) == wire


def test_wire_candidate_keeps_username_fragment_and_end_marker() -> None:
    wire = parse_wire_candidate(
        {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "sEMT"}
    )
    assert wire.is_end_of_candidates
    assert wire.to_json()["usernameFragment"] == "sEMT"
    with pytest.raises(ProtocolError):
        wire.parsed()


@pytest.mark.parametrize(
    "obj",
    [
        None,
        "candidate:abc",
        [],
        {},
        {"candidate": 5, "sdpMid": "0"},
        {"candidate": CHROME},
        {"candidate": CHROME, "sdpMid": 0},
        {"candidate": CHROME, "sdpMLineIndex": True},
        {"candidate": CHROME, "sdpMLineIndex": -1},
        {"candidate": CHROME, "sdpMLineIndex": "0"},
        {"candidate": CHROME, "sdpMid": "x" * 33},
        {"candidate": CHROME, "sdpMid": "0", "usernameFragment": 7},
        {"candidate": "candidate:bad", "sdpMid": "0"},
    ],
)
def test_wire_candidate_rejects_bad_shapes(obj: object) -> None:
    with pytest.raises(ProtocolError):
        parse_wire_candidate(obj)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=8,
)
wire_like = st.fixed_dictionaries(
    {},
    optional={
        "candidate": st.text(max_size=60) | candidates.map(lambda c: c.attribute) | json_values,
        "sdpMid": st.none() | st.text(max_size=40) | json_values,
        "sdpMLineIndex": st.none() | st.integers(-2, 2000) | json_values,
        "usernameFragment": st.none() | st.text(max_size=10) | json_values,
    },
)


@settings(max_examples=200)
@given(json_values | wire_like)
def test_wire_parser_only_ever_raises_protocol_error(obj: object) -> None:
    try:
        wire = parse_wire_candidate(obj)
    except ProtocolError:
        return
    assert parse_wire_candidate(wire.to_json()) == wire


def test_candidates_from_sdp_reads_mid_and_index() -> None:
    found = candidates_from_sdp(AIORTC_OFFER)
    assert [c.sdp_mid for c in found] == ["0", "0"]
    assert [c.sdp_mline_index for c in found] == [0, 0]
    assert [c.parsed().port for c in found] == [40000, 40001]


@settings(max_examples=50)
@given(st.lists(st.tuples(st.none() | words, st.lists(candidates, max_size=3)), max_size=4))
def test_candidates_from_generated_sdp(
    sections: list[tuple[str | None, list[Candidate]]],
) -> None:
    lines = ["v=0", "a=candidate:session 1 udp 1 9.9.9.9 9 typ host"]
    expected: list[WireCandidate] = []
    for index, (mid, section) in enumerate(sections):
        lines.append("m=application 9 UDP/DTLS/SCTP webrtc-datachannel")
        # mid after the candidates: the index and mid still belong to the whole section
        lines += ["a=" + c.attribute for c in section]
        if mid is not None:
            lines.append(f"a=mid:{mid}")
        expected += [
            WireCandidate(candidate=c.attribute, sdp_mid=mid, sdp_mline_index=index)
            for c in section
        ]
    assert list(candidates_from_sdp("\r\n".join(lines) + "\r\n")) == expected


def test_strip_candidates_keeps_everything_else() -> None:
    stripped = strip_candidates(AIORTC_OFFER)
    assert "a=candidate" not in stripped
    assert "end-of-candidates" not in stripped
    assert candidates_from_sdp(stripped) == ()
    kept = [line for line in AIORTC_OFFER.split("\r\n") if "candidate" not in line]
    assert stripped == "\r\n".join(kept)


@given(st.lists(st.text(alphabet="a=cndite:-\r 0\x1c", max_size=12), max_size=8))
def test_strip_removes_exactly_candidate_lines(lines: list[str]) -> None:
    lines = [line.replace("\n", "") for line in lines]
    kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    assert strip_candidates("\n".join(lines)) == "\n".join(kept)
