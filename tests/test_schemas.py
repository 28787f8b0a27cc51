"""The wire models accept exactly the wire format of docs/protocol.md §2-§10 and give it back.

Three kinds of checks:
- every example of the spec validates and comes back identical, key order included;
- the spec's limits and the original's strict/tolerant spots, one by one;
- hypothesis: any valid object round-trips, unknown fields are ignored, a missing
  required field is refused, batches hold 1 to 100 calls.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import rondevu_schemas as rs
from rondevu_core.rpc import Method
from rondevu_core.rules.offer_id import offer_id_for_sdp
from rondevu_schemas import WireModel, WireRootModel
from rondevu_schemas.export import exported_models

Model = type[WireModel] | type[WireRootModel[Any]]

# Full-length stand-ins for the spec's elided values ("204e…a3b2", "<uuid>", "<ts>").
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
OFFER_ID = "48e69901419976866d277c009a637dc035e8b1fcc56c37c241642bc3c3dffa1b"
SERVICE_ID = "0bb4b37e-0bd7-4818-a872-33458cc9b3e6"
PUBLIC_KEY = "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="
CANDIDATE = {
    "candidate": "candidate:3 1 udp 2122260223 10.0.0.2 6000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}
CALL = {
    "method": "publishService",
    "message": "publishService:alice:chat:1.0.0@alice:1765700000000",
    "signature": "<base64 Ed25519 signature of message>",
    "publicKey": "<base64 32-byte Ed25519 public key>",
    "params": {"serviceFqn": "chat:1.0.0@alice", "offers": [{"sdp": "v=0..."}], "ttl": 300000},
}
ENTRY = {
    "serviceId": SERVICE_ID,
    "username": "alice",
    "serviceFqn": "chat:1.2.3@alice",
    "offerId": OFFER_ID,
    "sdp": SDP,
    "createdAt": 1795733338663,
    "expiresAt": 1795733398663,
}
PAGE = {"services": [ENTRY], "count": 1, "limit": 20, "offset": 0}

# (model, wire value) for every example of docs/protocol.md §2-§10, keys in the spec's order.
SPEC_EXAMPLES: list[tuple[Model, Any]] = [
    # §2 HTTP bodies
    (
        rs.ServerInfo,
        {
            "version": "unknown",
            "name": "Rondevu",
            "description": "WebRTC signaling with RPC interface and Ed25519 authentication",
        },
    ),
    (
        rs.ServerInfo,  # ours (docs/long-polling.md)
        {
            "version": "unknown",
            "name": "Rondevu",
            "description": "WebRTC signaling with RPC interface and Ed25519 authentication",
            "extensions": {"longPoll": {"maxWaitMs": 25000}},
        },
    ),
    (rs.HealthStatus, {"status": "ok", "timestamp": 1765700000000, "version": "unknown"}),
    (rs.NotFoundBody, {"error": "Not found. Use POST /rpc for all API calls."}),
    (rs.InvalidRequestBody, {"success": False, "error": "Invalid request format"}),
    (rs.EmptyBatchBody, {"error": "Empty request array"}),
    (rs.BatchTooLargeBody, {"error": "Too many requests in batch (max 100)"}),
    # §3 envelope
    (rs.RpcCall, CALL),
    (rs.RpcRequestBody, CALL),
    (rs.RpcRequestBody, [CALL, {**CALL, "method": "poll", "params": {}}]),
    (rs.RpcBatch, [CALL]),
    (rs.RpcSuccess, {"success": True, "result": {}}),
    (rs.RpcFailure, {"success": False, "error": "UNIQUE constraint failed: usernames.public_key"}),
    (
        rs.RpcFailure,
        {
            "success": False,
            "error": "Cannot destructure property 'method' of 'request' as it is null.",
        },
    ),
    (rs.RpcResponseBody, {"success": False, "error": "Missing or invalid method"}),
    (
        rs.RpcResponseBody,
        [{"success": True, "result": {"success": True}}, {"success": False, "error": "x"}],
    ),
    (rs.RpcBatchResponse, [{"success": False, "error": "Offer not yet answered"}]),
    # §5, §7.1 getUser
    (rs.GetUserParams, {"username": "alice"}),
    (rs.GetUserParams, {}),
    (rs.GetUserResult, {"username": "alice", "available": True}),
    (rs.GetUserResult, {"username": "NOT VALID!", "available": True}),
    (rs.GetUserResult, {"available": True}),
    (
        rs.GetUserResult,
        {
            "username": "alice",
            "available": False,
            "claimedAt": 1765700000000,
            "expiresAt": 1797236000000,
            "publicKey": PUBLIC_KEY,
        },
    ),
    # §7.2 publishService
    (rs.PublishServiceParams, CALL["params"]),
    (rs.PublishServiceParams, {"serviceFqn": "chat:1.0.0@alice", "offers": [{"sdp": SDP}]}),
    (
        rs.PublishServiceResult,
        {
            "serviceId": SERVICE_ID,
            "username": "alice",
            "serviceFqn": "chat:1.2.3@alice",
            "offers": [
                {
                    "offerId": OFFER_ID,
                    "sdp": SDP,
                    "createdAt": 1795733338665,
                    "expiresAt": 1795733398663,
                }
            ],
            "createdAt": 1795733338663,
            "expiresAt": 1795733398663,
        },
    ),
    (  # our extension: a server that keeps answered offers on republish says so (B8)
        rs.PublishServiceResult,
        {
            "serviceId": SERVICE_ID,
            "username": "alice",
            "serviceFqn": "chat:1.2.3@alice",
            "offers": [
                {
                    "offerId": OFFER_ID,
                    "sdp": SDP,
                    "createdAt": 1795733338665,
                    "expiresAt": 1795733398663,
                }
            ],
            "createdAt": 1795733338663,
            "expiresAt": 1795733398663,
            "keepsAnsweredOffers": True,
        },
    ),
    # §7.3 getService, §7.3 discovery modes
    (rs.GetServiceParams, {"serviceFqn": "chat:1.0.0@alice"}),
    (rs.GetServiceParams, {"serviceFqn": "chat:1.0.0"}),
    (rs.GetServiceParams, {"serviceFqn": "chat:1.0.0", "limit": 20, "offset": 0}),
    (rs.ServiceEntry, ENTRY),
    (rs.GetServiceResult, ENTRY),
    (rs.ServicePage, PAGE),
    (rs.GetServiceResult, PAGE),
    (rs.GetServiceResult, {"services": [], "count": 0, "limit": 1, "offset": 5}),
    # §7.4 deleteService
    (rs.DeleteServiceParams, {"serviceFqn": "chat:1.0.0@alice"}),
    (rs.DeleteServiceResult, {"success": True}),
    # §7.5 answerOffer
    (rs.AnswerOfferParams, {"serviceFqn": "chat:1.0.0@alice", "offerId": OFFER_ID, "sdp": SDP}),
    (rs.AnswerOfferResult, {"success": True, "offerId": OFFER_ID}),
    # §7.6 getOfferAnswer
    (rs.GetOfferAnswerParams, {"serviceFqn": "chat:1.0.0@alice", "offerId": OFFER_ID}),
    (
        rs.GetOfferAnswerResult,
        {"sdp": SDP, "offerId": OFFER_ID, "answererId": "bob", "answeredAt": 1795733338715},
    ),
    # §7.7, §7.7 poll
    (rs.PollParams, {"since": 1795733338715}),
    (rs.PollParams, {}),
    (rs.PollParams, {"since": 1795733338715, "waitMs": 25000}),  # ours
    (rs.PollResult, {"answers": [], "iceCandidates": {}}),
    (
        rs.PollResult,
        {
            "answers": [
                {
                    "offerId": OFFER_ID,
                    "serviceId": SERVICE_ID,
                    "answererId": "bob",
                    "sdp": SDP,
                    "answeredAt": 1795733338715,
                }
            ],
            "iceCandidates": {
                OFFER_ID: [
                    {
                        "id": 3,
                        "offerId": OFFER_ID,
                        "username": "bob",
                        "role": "answerer",
                        "candidate": {
                            "candidate": "candidate:3 1 udp 2122260223 10.0.0.2 6000 typ host",
                            "sdpMid": "0",
                            "sdpMLineIndex": 0,
                        },
                        "createdAt": 1795733338726,
                    }
                ]
            },
        },
    ),
    # §7.8, §9 addIceCandidates
    (
        rs.AddIceCandidatesParams,
        {"serviceFqn": "chat:1.0.0@alice", "offerId": OFFER_ID, "candidates": [CANDIDATE]},
    ),
    (rs.AddIceCandidatesResult, {"count": 1, "offerId": OFFER_ID}),
    # §7.9 getIceCandidates
    (
        rs.GetIceCandidatesParams,
        {"serviceFqn": "chat:1.0.0@alice", "offerId": OFFER_ID, "since": 0},
    ),
    (
        rs.GetIceCandidatesResult,
        {"candidates": [{"candidate": CANDIDATE, "createdAt": 1795733338726}], "offerId": OFFER_ID},
    ),
]


def compact(value: Any) -> str:
    """``JSON.stringify(value)``: compact, insertion order, non-ASCII as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(("model", "wire"), SPEC_EXAMPLES)
def test_spec_example_round_trips(model: Model, wire: Any) -> None:
    parsed = model.from_wire(wire)
    assert parsed.to_wire() == wire
    assert compact(parsed.to_wire()) == compact(wire)  # same key order too
    assert parsed.to_json() == compact(wire)
    assert type(model.from_wire(json.loads(parsed.to_json()))) is model


def test_example_ids_are_what_the_spec_derives() -> None:
    assert offer_id_for_sdp(SDP) == OFFER_ID


def test_call_params_validate_with_the_registry() -> None:
    call = rs.RpcCall.from_wire(CALL)
    assert call.known_method is Method.PUBLISH_SERVICE
    params = rs.METHODS[call.method].params.from_wire(call.params)
    assert params.to_wire() == CALL["params"]


# --- the registry -----------------------------------------------------------------


def test_registry_covers_the_nine_methods() -> None:
    assert set(rs.METHODS) == {method.value for method in Method}
    for name, schema in rs.METHODS.items():
        assert schema.method.value == name
        assert rs.METHODS[schema.method] is schema  # a Method is a str key too
        assert schema.params.__name__.endswith("Params")
        assert schema.result.__name__.endswith("Result")


# --- envelope (§3) ----------------------------------------------------------------


def test_call_ignores_unknown_fields_and_defaults_params() -> None:
    call = rs.RpcCall.from_wire(
        {"jsonrpc": "2.0", "id": 7, "method": "poll", "message": "poll:a:1", "signature": "s"}
    )
    assert call.params == {}
    assert call.public_key is None
    assert call.to_wire() == {"method": "poll", "message": "poll:a:1", "signature": "s"}


@pytest.mark.parametrize("key", ["method", "message", "signature"])
@pytest.mark.parametrize("bad", ["", None, 42, ["x"]])
def test_call_needs_non_empty_strings(key: str, bad: object) -> None:
    with pytest.raises(ValidationError):
        rs.RpcCall.from_wire({**CALL, key: bad})


def test_unknown_method_is_a_valid_call() -> None:
    call = rs.RpcCall.from_wire({**CALL, "method": "claimUsername"})
    assert call.known_method is None


def test_replies_are_told_apart_by_success() -> None:
    assert isinstance(
        rs.RpcResponseBody.from_wire({"success": True, "result": 1}).root, rs.RpcSuccess
    )
    with pytest.raises(ValidationError):
        rs.RpcResponseBody.from_wire({"success": True, "error": "x"})
    with pytest.raises(ValidationError):
        rs.RpcResponseBody.from_wire({"success": "true", "result": {}})


def test_ok_and_fail_build_replies_around_result_models() -> None:
    assert rs.ok(rs.GetUserResult(available=True)).to_json() == (
        '{"success":true,"result":{"available":true}}'
    )
    result = rs.AnswerOfferResult(success=True, offer_id=OFFER_ID)
    assert rs.ok(result).to_wire() == {
        "success": True,
        "result": {"success": True, "offerId": OFFER_ID},
    }
    assert rs.fail("Offer not found").to_json() == '{"success":false,"error":"Offer not found"}'


def test_wire_names_only_on_the_wire_snake_case_in_python() -> None:
    wire = {"serviceFqn": "chat:1.0.0@alice", "offers": [{"sdp": SDP}]}
    snake = {"service_fqn": "chat:1.0.0@alice", "offers": [{"sdp": SDP}]}
    with pytest.raises(ValidationError):
        rs.PublishServiceParams.from_wire(snake)  # the original never reads service_fqn
    built = rs.PublishServiceParams(service_fqn="chat:1.0.0@alice", offers=[rs.OfferSdp(sdp=SDP)])
    assert built.to_wire() == wire
    assert rs.PublishServiceParams.from_wire(wire) == built


def test_models_are_frozen() -> None:
    params = rs.PollParams(since=5)
    with pytest.raises(ValidationError):
        params.since = 6  # type: ignore[misc]


# --- HTTP bodies (§2) -------------------------------------------------------------


def test_http_texts_are_the_specs() -> None:
    assert rs.NOT_FOUND_ERROR == "Not found. Use POST /rpc for all API calls."
    assert rs.INVALID_REQUEST_FORMAT_ERROR == "Invalid request format"
    assert rs.EMPTY_BATCH_ERROR == "Empty request array"
    assert rs.BATCH_TOO_LARGE_ERROR == "Too many requests in batch (max 100)"
    assert rs.MAX_BATCH_SIZE == 100
    assert rs.NotFoundBody(error=rs.NOT_FOUND_ERROR).to_json() == compact(
        {"error": rs.NOT_FOUND_ERROR}
    )
    assert rs.EmptyBatchBody(error=rs.EMPTY_BATCH_ERROR).to_wire() == {
        "error": "Empty request array"
    }
    assert rs.BatchTooLargeBody(error=rs.BATCH_TOO_LARGE_ERROR).to_wire() == {
        "error": rs.BATCH_TOO_LARGE_ERROR
    }
    assert rs.InvalidRequestBody(
        success=False, error=rs.INVALID_REQUEST_FORMAT_ERROR
    ).to_wire() == {
        "success": False,
        "error": "Invalid request format",
    }
    with pytest.raises(ValidationError):
        rs.NotFoundBody.from_wire({"error": "Not found"})


# --- getUser (§5, §7.1) -----------------------------------------------------------


def test_get_user_result_omits_what_it_was_not_given() -> None:
    assert rs.GetUserResult(available=True).to_json() == '{"available":true}'
    assert rs.GetUserResult(username="bob", available=True).to_wire() == {
        "username": "bob",
        "available": True,
    }
    # JavaScript keeps null but drops undefined: an explicit null username is echoed.
    assert rs.GetUserResult(username=None, available=True).to_wire() == {
        "username": None,
        "available": True,
    }


@pytest.mark.parametrize(
    "wire",
    [
        {"username": "alice", "available": True, "claimedAt": 1},
        {"username": "alice", "available": True, "publicKey": None},
        {"username": "alice", "available": False},
        {"username": "alice", "available": False, "claimedAt": 1, "expiresAt": 2},
        {
            "username": "alice",
            "available": False,
            "claimedAt": None,
            "expiresAt": 2,
            "publicKey": "k",
        },
        {"available": False, "claimedAt": 1, "expiresAt": 2, "publicKey": "k"},
        {
            "username": "NOT VALID!",
            "available": False,
            "claimedAt": 1,
            "expiresAt": 2,
            "publicKey": "k",
        },
    ],
)
def test_get_user_result_is_unclaimed_or_fully_claimed(wire: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        rs.GetUserResult.from_wire(wire)


def test_get_user_params_take_any_username() -> None:
    # The original echoes an invalid or non-string name back with available:true.
    for username in ["NOT VALID!", 42, None, {"a": 1}]:
        assert rs.GetUserParams.from_wire({"username": username}).username == username


# --- publishService (§7.2) --------------------------------------------------------


def test_publish_offers_count_1_to_100() -> None:
    fqn = "chat:1.0.0@alice"
    offers = [{"sdp": f"v=0 {i}"} for i in range(rs.MAX_OFFERS_PER_REQUEST + 1)]
    rs.PublishServiceParams.from_wire({"serviceFqn": fqn, "offers": offers[:100]})
    for bad in ([], offers, None, {"sdp": SDP}):
        with pytest.raises(ValidationError):
            rs.PublishServiceParams.from_wire({"serviceFqn": fqn, "offers": bad})


def test_keeps_answered_offers_is_an_optional_boolean_never_null() -> None:
    base = {
        "serviceId": SERVICE_ID,
        "username": "alice",
        "serviceFqn": "chat:1.0.0@alice",
        "offers": [{"offerId": OFFER_ID, "sdp": SDP, "createdAt": 1, "expiresAt": 2}],
        "createdAt": 1,
        "expiresAt": 2,
    }
    upstream = rs.PublishServiceResult.from_wire(base)  # 0.5.4 never sends it
    assert upstream.keeps_answered_offers is None
    assert "keepsAnsweredOffers" not in upstream.to_wire()
    ours = rs.PublishServiceResult.from_wire({**base, "keepsAnsweredOffers": True})
    assert ours.keeps_answered_offers is True
    for bad in (None, 1, "true"):
        with pytest.raises(ValidationError):
            rs.PublishServiceResult.from_wire({**base, "keepsAnsweredOffers": bad})
    schema = rs.PublishServiceResult.model_json_schema(by_alias=True)
    assert schema["properties"]["keepsAnsweredOffers"]["type"] == "boolean"
    assert "keepsAnsweredOffers" not in schema["required"]


@pytest.mark.parametrize("sdp", ["", "   ", "\r\n\t", "\u3000\ufeff\u00a0", None, 5, ["v=0"]])
def test_offer_sdp_must_be_text_not_only_javascript_whitespace(sdp: object) -> None:
    with pytest.raises(ValidationError):
        rs.OfferSdp.from_wire({"sdp": sdp})


def test_offer_sdp_trim_is_javascripts_not_pythons() -> None:
    # str.strip() would empty these; String.prototype.trim() keeps them (not WhiteSpace).
    for sdp in ["\x1c", " \x1f ", "\x85"]:
        assert rs.OfferSdp.from_wire({"sdp": sdp}).sdp == sdp


def test_offer_sdp_has_no_size_limit() -> None:
    assert len(rs.OfferSdp.from_wire({"sdp": "a" * 200_000}).sdp) == 200_000


@pytest.mark.parametrize(
    ("fqn", "message"),
    [
        ("chat:1.0.0", "Service FQN must include username"),
        ("chat:1.0.0@", "Service FQN must include username"),
        ("Chat:1.0.0@alice", "Service name must be lowercase alphanumeric"),
        ("chat:1.0@alice", "Version must be semantic versioning"),
        ("chat@alice", "Service FQN must be in format"),
        ("chat:1.0.0@Al", "Username must be at least 3 characters"),
    ],
)
def test_publish_fqn_is_checked_by_the_core_rules(fqn: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        rs.PublishServiceParams.from_wire({"serviceFqn": fqn, "offers": [{"sdp": SDP}]})


@pytest.mark.parametrize("ttl", ["300000", True, 1.5])
def test_numbers_are_strict(ttl: object) -> None:
    with pytest.raises(ValidationError):
        rs.PublishServiceParams.from_wire(
            {"serviceFqn": "chat:1.0.0@alice", "offers": [{"sdp": SDP}], "ttl": ttl}
        )


def test_ttl_is_not_clamped_by_the_schema() -> None:
    for ttl in [-5, 0, 1000, 10**12]:
        params = {"serviceFqn": "chat:1.0.0@alice", "offers": [{"sdp": SDP}], "ttl": ttl}
        assert rs.PublishServiceParams.from_wire(params).ttl == ttl


# --- getService (§7.3) ------------------------------------------------------------


def test_get_service_mode_follows_presence_of_limit() -> None:
    fqn = "chat:1.0.0@alice"
    assert not rs.GetServiceParams.from_wire({"serviceFqn": fqn}).paginated
    assert not rs.GetServiceParams.from_wire({"serviceFqn": fqn, "offset": 3}).paginated
    assert rs.GetServiceParams.from_wire({"serviceFqn": fqn, "limit": 5}).paginated
    null_limit = rs.GetServiceParams.from_wire({"serviceFqn": fqn, "limit": None})
    assert null_limit.paginated  # `limit !== undefined` in the original
    assert null_limit.to_wire() == {"serviceFqn": fqn, "limit": None}
    assert rs.GetServiceParams.from_wire({"serviceFqn": fqn, "limit": 10**6}).limit == 10**6


@pytest.mark.parametrize("fqn", ["chat", "chat:1.0.0@NOT VALID", 7, None])
def test_get_service_fqn_must_be_valid(fqn: object) -> None:
    with pytest.raises(ValidationError):
        rs.GetServiceParams.from_wire({"serviceFqn": fqn})


@pytest.mark.parametrize(
    "page",
    [
        {**PAGE, "count": 2},
        {**PAGE, "count": 0},
        {**PAGE, "limit": 0, "services": [], "count": 0},
        {**PAGE, "limit": 101},
        {**PAGE, "offset": -1},
        {"services": [ENTRY, ENTRY], "count": 2, "limit": 1, "offset": 0},
    ],
)
def test_service_page_is_consistent(page: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        rs.ServicePage.from_wire(page)


def test_get_service_result_is_an_entry_or_a_page() -> None:
    assert isinstance(rs.GetServiceResult.from_wire(ENTRY).root, rs.ServiceEntry)
    assert isinstance(rs.GetServiceResult.from_wire(PAGE).root, rs.ServicePage)
    with pytest.raises(ValidationError):
        rs.GetServiceResult.from_wire({**ENTRY, "offerId": "204e…a3b2"})


# --- deleteService (§7.4) ---------------------------------------------------------


def test_delete_service_only_parses_the_fqn() -> None:
    # The original skips the character rules here; it needs a username, nothing more.
    assert rs.DeleteServiceParams.from_wire({"serviceFqn": "Chat:x@NOT VALID"}).service_fqn
    for bad in ["chat:1.0.0", "chat:1.0.0@", "@alice", "", None]:
        with pytest.raises(ValidationError):
            rs.DeleteServiceParams.from_wire({"serviceFqn": bad})


# --- answerOffer (§7.5) -----------------------------------------------------------


def test_answer_sdp_limit_counts_javascript_characters() -> None:
    def params(sdp: str) -> dict[str, Any]:
        return {"offerId": OFFER_ID, "sdp": sdp}

    limit = rs.MAX_ANSWER_SDP_LENGTH
    assert rs.AnswerOfferParams.from_wire(params("a" * limit))
    assert rs.AnswerOfferParams.from_wire(params("\U0001f600" * (limit // 2)))
    for sdp in ["a" * (limit + 1), "\U0001f600" * (limit // 2 + 1), ""]:
        with pytest.raises(ValidationError):
            rs.AnswerOfferParams.from_wire(params(sdp))
    # Unlike offers, the original does not trim answers.
    assert rs.AnswerOfferParams.from_wire(params("   ")).sdp == "   "


def test_ignored_service_fqn_takes_anything() -> None:
    for value in [None, 5, "whatever", {"a": 1}]:
        params = {"serviceFqn": value, "offerId": OFFER_ID}
        assert rs.GetOfferAnswerParams.from_wire(params).to_wire() == params
    assert rs.GetOfferAnswerParams.from_wire({"offerId": "x"}).to_wire() == {"offerId": "x"}


# --- ICE candidates (§7.7-§7.9, §9) -----------------------------------------------


def test_candidates_are_opaque_objects_or_arrays() -> None:
    odd = [{"anything": [1, {"deep": None}]}, ["arrays", "are", "accepted"], {}]
    params = {"offerId": OFFER_ID, "candidates": odd}
    assert rs.AddIceCandidatesParams.from_wire(params).to_wire() == params
    for bad in [None, "candidate:1", 3, True]:
        with pytest.raises(ValidationError):
            rs.AddIceCandidatesParams.from_wire({"offerId": OFFER_ID, "candidates": [bad]})
    with pytest.raises(ValidationError):
        rs.AddIceCandidatesParams.from_wire({"offerId": OFFER_ID, "candidates": []})


def test_get_ice_candidates_items_carry_no_role() -> None:
    item = {"candidate": CANDIDATE, "createdAt": 5, "role": "offerer", "username": "x"}
    assert rs.IceCandidateItem.from_wire(item).to_wire() == {"candidate": CANDIDATE, "createdAt": 5}


def test_poll_map_holds_no_empty_lists_and_only_offer_ids() -> None:
    with pytest.raises(ValidationError):
        rs.PollResult.from_wire({"answers": [], "iceCandidates": {OFFER_ID: []}})
    with pytest.raises(ValidationError):
        rs.PollResult.from_wire({"answers": [], "iceCandidates": {"204e…": []}})


# --- hypothesis: strategies producing valid wire values ----------------------------

JS_WHITESPACE = (
    " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)

usernames = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,30}[a-z0-9]", fullmatch=True)
services = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True)
versions = st.from_regex(r"[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}(-[a-z0-9.-]{1,8})?", fullmatch=True)
owned_fqns = st.builds(lambda s, v, u: f"{s}:{v}@{u}", services, versions, usernames)
fqns = owned_fqns | st.builds(lambda s, v: f"{s}:{v}", services, versions)
timestamps = st.integers(0, 2**53)
ints = st.integers(-(2**53), 2**53)
offer_ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
service_ids = st.uuids().map(str)
texts = st.text(max_size=20)
non_empty = st.text(min_size=1, max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | ints | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
candidates = st.dictionaries(texts, json_values, max_size=4) | st.lists(json_values, max_size=3)


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> Any:
    return st.fixed_dictionaries(
        {k: v if isinstance(v, st.SearchStrategy) else st.just(v) for k, v in required.items()},
        optional=optional or {},
    )


calls = obj(
    {"method": non_empty, "message": non_empty, "signature": non_empty},
    {"publicKey": st.none() | texts, "params": st.dictionaries(texts, json_values, max_size=3)},
)
successes = obj({"success": True, "result": json_values})
failures = obj({"success": False, "error": texts})
replies = successes | failures
offer_sdps = obj({"sdp": non_empty.filter(lambda s: s.strip(JS_WHITESPACE) != "")})
published_offers = obj(
    {"offerId": offer_ids, "sdp": texts, "createdAt": timestamps, "expiresAt": timestamps}
)
entries = obj(
    {
        "serviceId": service_ids,
        "username": usernames,
        "serviceFqn": owned_fqns,
        "offerId": offer_ids,
        "sdp": texts,
        "createdAt": timestamps,
        "expiresAt": timestamps,
    }
)


@st.composite
def pages(draw: st.DrawFn) -> dict[str, Any]:
    services_ = draw(st.lists(entries, max_size=3))
    limit = draw(st.integers(max(1, len(services_)), 100))
    return {
        "services": services_,
        "count": len(services_),
        "limit": limit,
        "offset": draw(st.integers(0, 2**31)),
    }


poll_answers = obj(
    {
        "offerId": offer_ids,
        "serviceId": service_ids,
        "answererId": usernames,
        "sdp": texts,
        "answeredAt": timestamps,
    }
)
ice_rows = obj(
    {
        "id": st.integers(1, 2**53),
        "offerId": offer_ids,
        "username": usernames,
        "role": st.sampled_from(["offerer", "answerer"]),
        "candidate": candidates,
        "createdAt": timestamps,
    }
)
ice_items = obj({"candidate": candidates, "createdAt": timestamps})
ignored = {"serviceFqn": json_values}
answer_sdps = st.text(min_size=1, max_size=200)
long_poll = obj({"maxWaitMs": st.integers(1, 10**9)})
state_extension = obj({"path": texts, "maxLimit": st.integers(1, 10**9)})
server_extensions = obj({}, {"longPoll": long_poll, "state": state_extension})
wait_ms = st.none() | st.integers(0, 10**9)

STRATEGIES: dict[Model, st.SearchStrategy[Any]] = {
    rs.RpcCall: calls,
    rs.RpcBatch: st.lists(calls, min_size=1, max_size=5),
    rs.RpcRequestBody: calls | st.lists(calls, min_size=1, max_size=5),
    rs.RpcSuccess: successes,
    rs.RpcFailure: failures,
    rs.RpcBatchResponse: st.lists(replies, min_size=1, max_size=5),
    rs.RpcResponseBody: replies | st.lists(replies, min_size=1, max_size=5),
    rs.ServerInfo: obj(
        {"version": texts, "name": rs.http.SERVER_NAME, "description": rs.http.SERVER_DESCRIPTION},
        {"extensions": server_extensions},
    ),
    rs.ServerExtensions: server_extensions,
    rs.LongPollExtension: long_poll,
    rs.StateExtension: state_extension,
    rs.HealthStatus: obj({"status": "ok", "timestamp": timestamps, "version": texts}),
    rs.NotFoundBody: obj({"error": rs.NOT_FOUND_ERROR}),
    rs.InvalidRequestBody: obj({"success": False, "error": rs.INVALID_REQUEST_FORMAT_ERROR}),
    rs.EmptyBatchBody: obj({"error": rs.EMPTY_BATCH_ERROR}),
    rs.BatchTooLargeBody: obj({"error": rs.BATCH_TOO_LARGE_ERROR}),
    rs.GetUserParams: obj({}, {"username": json_values}),
    rs.GetUserResult: obj({"available": True}, {"username": json_values})
    | obj(
        {
            "username": usernames,
            "available": False,
            "claimedAt": timestamps,
            "expiresAt": timestamps,
            "publicKey": non_empty,
        }
    ),
    rs.OfferSdp: offer_sdps,
    rs.PublishServiceParams: obj(
        {"serviceFqn": owned_fqns, "offers": st.lists(offer_sdps, min_size=1, max_size=4)},
        {"ttl": st.none() | ints},
    ),
    rs.PublishedOffer: published_offers,
    rs.PublishServiceResult: obj(
        {
            "serviceId": service_ids,
            "username": usernames,
            "serviceFqn": owned_fqns,
            "offers": st.lists(published_offers, min_size=1, max_size=3),
            "createdAt": timestamps,
            "expiresAt": timestamps,
        },
        {"keepsAnsweredOffers": st.booleans()},
    ),
    rs.GetServiceParams: obj(
        {"serviceFqn": fqns}, {"limit": st.none() | ints, "offset": st.none() | ints}
    ),
    rs.ServiceEntry: entries,
    rs.ServicePage: pages(),
    rs.GetServiceResult: entries | pages(),
    rs.DeleteServiceParams: obj({"serviceFqn": owned_fqns}),
    rs.DeleteServiceResult: obj({"success": True}),
    rs.AnswerOfferParams: obj({"offerId": texts, "sdp": answer_sdps}, ignored),
    rs.AnswerOfferResult: obj({"success": True, "offerId": offer_ids}),
    rs.GetOfferAnswerParams: obj({"offerId": texts}, ignored),
    rs.GetOfferAnswerResult: obj(
        {"sdp": texts, "offerId": offer_ids, "answererId": usernames, "answeredAt": timestamps}
    ),
    rs.PollParams: obj({}, {"since": st.none() | ints, "waitMs": wait_ms}),
    rs.PollAnswer: poll_answers,
    rs.IceCandidateRow: ice_rows,
    rs.PollResult: obj(
        {
            "answers": st.lists(poll_answers, max_size=3),
            "iceCandidates": st.dictionaries(
                offer_ids, st.lists(ice_rows, min_size=1, max_size=3), max_size=3
            ),
        }
    ),
    rs.AddIceCandidatesParams: obj(
        {"offerId": texts, "candidates": st.lists(candidates, min_size=1, max_size=4)}, ignored
    ),
    rs.AddIceCandidatesResult: obj({"count": st.integers(1, 10**6), "offerId": offer_ids}),
    rs.GetIceCandidatesParams: obj(
        {"offerId": texts}, {**ignored, "since": st.none() | ints, "waitMs": wait_ms}
    ),
    rs.IceCandidateItem: ice_items,
    rs.GetIceCandidatesResult: obj(
        {"candidates": st.lists(ice_items, max_size=3), "offerId": offer_ids}
    ),
}
MODELS = sorted(STRATEGIES, key=lambda model: model.__name__)
OBJECT_MODELS = [model for model in MODELS if issubclass(model, WireModel)]


def test_every_exported_model_has_a_strategy() -> None:
    assert set(exported_models().values()) == set(STRATEGIES)


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_valid_values_round_trip(model: Model, data: st.DataObject) -> None:
    wire = data.draw(STRATEGIES[model])
    parsed = model.from_wire(wire)
    assert parsed.to_wire() == wire
    assert json.loads(parsed.to_json()) == wire
    assert model.from_wire(parsed.to_wire()) == parsed


@pytest.mark.parametrize("model", OBJECT_MODELS, ids=lambda model: model.__name__)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_unknown_fields_are_ignored(model: type[WireModel], data: st.DataObject) -> None:
    wire = data.draw(STRATEGIES[model])
    aliases = {field.alias for field in model.model_fields.values()}
    extra = data.draw(
        st.dictionaries(texts.filter(lambda key: key not in aliases), json_values, min_size=1)
    )
    assert model.from_wire({**extra, **wire}).to_wire() == wire


@pytest.mark.parametrize("model", OBJECT_MODELS, ids=lambda model: model.__name__)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_missing_required_field_is_refused(model: type[WireModel], data: st.DataObject) -> None:
    wire = data.draw(STRATEGIES[model])
    required = [f.alias for f in model.model_fields.values() if f.is_required()]
    for alias in required:
        assert alias is not None
        with pytest.raises(ValidationError):
            model.from_wire({k: v for k, v in wire.items() if k != alias})


@settings(max_examples=20, deadline=None)
@given(size=st.integers(0, 2 * rs.MAX_BATCH_SIZE), call=calls, reply=replies)
def test_batches_hold_1_to_100_items(size: int, call: Any, reply: Any) -> None:
    accepted = 1 <= size <= rs.MAX_BATCH_SIZE
    cases: list[tuple[type[WireRootModel[Any]], Any]] = [
        (rs.RpcBatch, call),
        (rs.RpcRequestBody, call),
        (rs.RpcBatchResponse, reply),
        (rs.RpcResponseBody, reply),
    ]
    for model, item in cases:
        if accepted:
            assert len(model.from_wire([item] * size).root) == size
        else:
            with pytest.raises(ValidationError):
                model.from_wire([item] * size)
