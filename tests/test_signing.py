"""Ed25519 identities and signed messages (docs/protocol.md §4), including the test vector."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rondevu_core.errors import ValidationError
from rondevu_core.rpc import Method, RpcRequest, envelope
from rondevu_core.rules.signing import (
    KeyPair,
    build_message,
    canonical_public_key,
    check_timestamp,
    decode_base64,
    expected_context,
    js_parse_int,
    parse_auth_message,
    sign_message,
    verify_signature,
)

VECTOR_PRIVATE = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
VECTOR_PUBLIC = "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="
VECTOR_SIGNATURES = {
    "poll:alice:1765700000000": "SWBs8U662WBdjo0yeGw7AaRGBCmSvRnKNWBGs1bb3h1qc91xSArJ5xoksNz/"
    "k29q/+r5+ug2nf6TwctpCRxLBg==",
    "publishService:alice:chat:1.0.0@alice:1765700000000": "bB7VlucXf+xOum00JGGIrMvBC5xVA59O"
    "FpHORURtxHzlRiJVfJ/u8/5bnM55jjiVVUQqbwbD+74+ODtSgJ1QAQ==",
    "getIceCandidates:alice:0123abcd:0:1765700000000": "CatYQ7iiJngGaenWTtn7rD6eo/+R3e3Fkg60c0"
    "WlUQ2n/GCS0gti3DLJinCE1Soxo1CVQwwyPQ0Tapckyr8sDA==",
}
seeds = st.binary(min_size=32, max_size=32)
messages = st.text(max_size=200)


def test_vector_key_pair() -> None:
    pair = KeyPair.from_private_key(VECTOR_PRIVATE)
    assert pair.public_key == VECTOR_PUBLIC
    assert pair == KeyPair.from_seed(bytes(range(1, 33)))


@pytest.mark.parametrize(("message", "signature"), VECTOR_SIGNATURES.items())
def test_vector_signatures_reproduce_byte_for_byte(message: str, signature: str) -> None:
    assert sign_message(VECTOR_PRIVATE, message) == signature
    assert verify_signature(VECTOR_PUBLIC, message, signature)


def test_vector_messages_are_what_build_message_makes() -> None:
    ts = 1765700000000
    assert build_message("poll", "alice", None, ts) in VECTOR_SIGNATURES
    assert build_message("publishService", "alice", "chat:1.0.0@alice", ts) in VECTOR_SIGNATURES
    context = expected_context("getIceCandidates", {"offerId": "0123abcd", "since": 0})
    assert build_message("getIceCandidates", "alice", context, ts) in VECTOR_SIGNATURES


def test_envelope_reproduces_the_vector() -> None:
    pair = KeyPair.from_private_key(VECTOR_PRIVATE)
    body = envelope(
        RpcRequest(method=Method.POLL, params={"since": 0}),
        username="alice",
        keypair=pair,
        now_ms=1765700000000,
    )
    assert body == {
        "method": "poll",
        "message": "poll:alice:1765700000000",
        "signature": VECTOR_SIGNATURES["poll:alice:1765700000000"],
        "publicKey": VECTOR_PUBLIC,
        "params": {"since": 0},
    }


def test_get_user_envelope_carries_no_public_key() -> None:
    pair = KeyPair.from_seed(bytes(32))
    body = envelope(
        RpcRequest(method=Method.GET_USER, params={"username": "bob"}),
        username="alice",
        keypair=pair,
        now_ms=5,
    )
    assert "publicKey" not in body
    assert body["message"] == "getUser:alice:bob:5"


@given(seeds, messages)
def test_sign_then_verify(seed: bytes, message: str) -> None:
    pair = KeyPair.generate(lambda n: seed[:n])
    signature = pair.sign(message)
    assert len(base64.b64decode(signature)) == 64
    assert verify_signature(pair.public_key, message, signature)


@given(seeds, messages, messages)
def test_a_signature_does_not_verify_another_message(seed: bytes, a: str, b: str) -> None:
    pair = KeyPair.from_seed(seed)
    if a != b:
        assert not verify_signature(pair.public_key, b, pair.sign(a))


@given(seeds, seeds, messages)
def test_a_signature_does_not_verify_under_another_key(s1: bytes, s2: bytes, m: str) -> None:
    if s1 != s2:
        assert not verify_signature(
            KeyPair.from_seed(s2).public_key, m, KeyPair.from_seed(s1).sign(m)
        )


@given(st.text(max_size=100), st.text(max_size=100))
def test_garbage_keys_and_signatures_never_raise(key: str, signature: str) -> None:
    assert verify_signature(key, "poll:alice:1", signature) in (True, False)


@given(seeds)
def test_key_export_import_round_trip(seed: bytes) -> None:
    pair = KeyPair.from_seed(seed)
    assert KeyPair.from_private_key(pair.private_key) == pair
    assert KeyPair.from_exported(pair.public_key, pair.private_key) == pair
    assert len(pair.public_key) == 44
    assert len(pair.private_key) == 44


def test_import_rejects_mismatched_or_malformed_keys() -> None:
    a, b = KeyPair.from_seed(bytes(32)), KeyPair.from_seed(bytes([1]) * 32)
    with pytest.raises(ValidationError, match="does not match"):
        KeyPair.from_exported(b.public_key, a.private_key)
    for bad in ["", "not base64!", base64.b64encode(bytes(31)).decode()]:
        with pytest.raises(ValidationError, match="32-byte"):
            KeyPair.from_private_key(bad)
    with pytest.raises(ValidationError, match="32 bytes"):
        KeyPair.from_seed(bytes(16))


@given(st.binary(max_size=80))
def test_base64_accepts_standard_and_url_safe_forms(raw: bytes) -> None:
    standard = base64.b64encode(raw).decode()
    if raw:
        assert decode_base64(standard) == raw
        assert decode_base64(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw


def test_url_safe_signature_verifies_like_node_would() -> None:
    message = "poll:alice:1765700000000"
    url_safe = VECTOR_SIGNATURES[message].replace("+", "-").replace("/", "_").rstrip("=")
    assert verify_signature(VECTOR_PUBLIC, message, url_safe)


# -- the server's reading of a message ---------------------------------------------------


@pytest.mark.parametrize(
    ("message", "method", "username", "context", "ts"),
    [
        ("poll:alice:1765700000000", "poll", "alice", None, 1765700000000),
        (
            "publishService:alice:chat:1.0.0@alice:17",
            "publishService",
            "alice",
            "chat:1.0.0@alice",
            17,
        ),
        ("getIceCandidates:a:o1:0:5", "getIceCandidates", "a", "o1:0", 5),
        ("x:y:1765700000000abc", "x", "y", None, 1765700000000),  # parseInt stops at junk
        ("x:y: \t42", "x", "y", None, 42),
        ("x:y:0x10", "x", "y", None, 16),
        ("x:y:-3", "x", "y", None, -3),
    ],
)
def test_parse_auth_message(
    message: str, method: str, username: str, context: str | None, ts: int
) -> None:
    parsed = parse_auth_message(message)
    assert (parsed.method, parsed.username, parsed.context, parsed.timestamp_ms) == (
        method,
        username,
        context,
        ts,
    )


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("poll", "Invalid message format: must have at least action:username:timestamp"),
        ("poll:alice", "Invalid message format: must have at least action:username:timestamp"),
        ("poll:alice:", "Invalid timestamp in message"),
        ("poll:alice:abc", "Invalid timestamp in message"),
        ("poll:alice:0x", "Invalid timestamp in message"),
    ],
)
def test_parse_auth_message_errors(message: str, error: str) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_auth_message(message)
    assert str(raised.value) == error


@given(
    st.lists(st.text(alphabet="abc:1", max_size=5), min_size=3, max_size=6),
    st.integers(min_value=0, max_value=2**53),
)
def test_parse_recovers_build(fields: list[str], ts: int) -> None:
    method, username = fields[0].replace(":", ""), fields[1].replace(":", "")
    context = ":".join(fields[2:]) or None
    parsed = parse_auth_message(build_message(method, username, context, ts))
    assert (parsed.method, parsed.username, parsed.context, parsed.timestamp_ms) == (
        method,
        username,
        context,
        ts,
    )


@given(st.text(max_size=40))
def test_js_parse_int_never_raises(text: str) -> None:
    value = js_parse_int(text)
    assert value is None or isinstance(value, int)


def test_js_parse_int_bounds_huge_inputs() -> None:
    assert js_parse_int("9" * 100_000) == 10**30
    assert js_parse_int("-" + "9" * 100_000) == -(10**30)


@pytest.mark.parametrize(
    ("delta", "ok"), [(0, True), (300_000, True), (-300_000, True), (300_001, False)]
)
def test_timestamp_window(delta: int, ok: bool) -> None:
    now = 1765700000000
    if ok:
        check_timestamp(now + delta, now)
    else:
        with pytest.raises(ValidationError) as raised:
            check_timestamp(now + delta, now)
        assert str(raised.value) == "Timestamp too old or too far in future (tolerance: 300s)"


def test_timestamp_in_seconds_fails() -> None:
    with pytest.raises(ValidationError):
        check_timestamp(1765700000, 1765700000000)


@pytest.mark.parametrize(
    ("method", "params", "context"),
    [
        ("getUser", {"username": "bob"}, "bob"),
        ("publishService", {"serviceFqn": "chat:1.0.0@a"}, "chat:1.0.0@a"),
        ("getService", {"serviceFqn": "chat:1.0.0"}, "chat:1.0.0"),
        ("deleteService", {"serviceFqn": "chat:1.0.0@a"}, "chat:1.0.0@a"),
        ("answerOffer", {"offerId": "ab"}, "ab"),
        ("getOfferAnswer", {"offerId": "ab"}, "ab"),
        ("addIceCandidates", {"offerId": "ab"}, "ab"),
        ("getIceCandidates", {"offerId": "ab", "since": 17}, "ab:17"),
        ("getIceCandidates", {"offerId": "ab"}, "ab:0"),
        ("getIceCandidates", {"offerId": "ab", "since": 17.0}, "ab:17"),
        ("poll", {"since": 4}, None),
        ("noSuchMethod", {}, None),
    ],
)
def test_expected_context_per_method(
    method: str, params: dict[str, object], context: str | None
) -> None:
    assert expected_context(method, params) == context


@given(raw=st.binary(min_size=32, max_size=32), pad=st.sampled_from(["", " ", "\n  "]))
def test_every_spelling_of_a_key_has_one_canonical_form(raw: bytes, pad: str) -> None:
    standard = base64.b64encode(raw).decode()
    spellings = [
        standard,
        standard.rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        pad + standard + pad,
    ]
    assert {canonical_public_key(text) for text in spellings} == {standard}
    assert len(standard) == 44


@given(raw=st.binary(max_size=64).filter(lambda b: len(b) != 32))
def test_only_32_byte_keys_have_a_canonical_form(raw: bytes) -> None:
    assert canonical_public_key(base64.b64encode(raw).decode()) is None


def test_over_long_key_or_signature_text_is_refused_before_decoding() -> None:
    pair = KeyPair.generate(lambda n: bytes(range(n)))
    signature = pair.sign("m")
    assert canonical_public_key(" " * 7_000_000 + pair.public_key) is None
    assert verify_signature(pair.public_key, "m", signature)
    assert not verify_signature(" " * 200 + pair.public_key, "m", signature)
    assert not verify_signature(pair.public_key, "m", signature + " " * 200)
