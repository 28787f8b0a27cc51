"""The fake signaling server keeps the 0.5.4 semantics the harness tests rely on."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rondevu_core.rpc import Method, RpcFailed, RpcOk, RpcRequest
from rondevu_core.rules.offer_id import offer_id_for_sdp
from tests.fakes.signaling import FakeSignalingServer

T0 = 1_765_700_000_000
FQN = "chat:1.0.0@alice"


def ok(server: FakeSignalingServer, user: str, method: Method, now: int, **params: Any) -> Any:
    outcome = server.call(user, RpcRequest(method=method, params=params), now)
    assert isinstance(outcome, RpcOk), outcome
    return outcome.result


def error(server: FakeSignalingServer, user: str, method: Method, now: int, **params: Any) -> str:
    outcome = server.call(user, RpcRequest(method=method, params=params), now)
    assert isinstance(outcome, RpcFailed), outcome
    assert not outcome.transport
    return outcome.error


def publish(server: FakeSignalingServer, *sdps: str, now: int = T0, ttl: int = 300_000) -> Any:
    offers = [{"sdp": sdp} for sdp in sdps]
    return ok(server, "alice", Method.PUBLISH_SERVICE, now, serviceFqn=FQN, offers=offers, ttl=ttl)


def test_publish_replaces_previous_offers_and_clamps_ttl() -> None:
    server = FakeSignalingServer()
    first = publish(server, "v=0 a", ttl=1000)
    assert first["expiresAt"] - first["createdAt"] == 60_000
    assert first["offers"][0]["offerId"] == offer_id_for_sdp("v=0 a")
    publish(server, "v=0 b", now=T0 + 1)  # B8: the whole service is replaced
    old_id = first["offers"][0]["offerId"]
    assert error(server, "bob", Method.ANSWER_OFFER, T0 + 2, offerId=old_id, sdp="x") == (
        "Offer not found"
    )
    assert [o.sdp for o in server.offers] == ["v=0 b"]


@pytest.mark.parametrize("mode", ["ours", "upstream"])
def test_republish_keeps_answered_offers_only_in_ours(mode: str) -> None:
    server = FakeSignalingServer(mode=mode)  # type: ignore[arg-type]
    first = publish(server, "v=0 a", "v=0 b", ttl=120_000)
    id_a, id_b = (o["offerId"] for o in first["offers"])
    ok(server, "bob", Method.ANSWER_OFFER, T0 + 1, offerId=id_a, sdp="answer")
    ok(server, "bob", Method.ADD_ICE_CANDIDATES, T0 + 2, offerId=id_a, candidates=[{"a": 1}])
    ok(server, "alice", Method.ADD_ICE_CANDIDATES, T0 + 2, offerId=id_a, candidates=[{"o": 1}])
    # The pool had not seen the answer: it sends A again, with a new C instead of B.
    again = publish(server, "v=0 a", "v=0 c", now=T0 + 10, ttl=60_000)
    id_c = offer_id_for_sdp("v=0 c")
    assert [o["offerId"] for o in again["offers"]] == [id_a, id_c]
    gone = error(server, "alice", Method.GET_OFFER_ANSWER, T0 + 11, offerId=id_b)
    assert gone == "Offer not found"  # unanswered offers are replaced in both modes
    if mode == "upstream":  # 0.5.4: everything replaced, no promise made
        assert "keepsAnsweredOffers" not in again
        assert again["serviceId"] != first["serviceId"]
        # A was stored afresh: its answer and candidates are lost (B8).
        lost = error(server, "alice", Method.GET_OFFER_ANSWER, T0 + 11, offerId=id_a)
        assert lost == "Offer not yet answered"
        assert server.candidates == []
        return
    assert again["keepsAnsweredOffers"] is True
    assert again["serviceId"] == first["serviceId"]
    assert again["offers"][0] == first["offers"][0]  # the kept offer, as stored
    assert again["offers"][1]["createdAt"] == T0 + 10
    assert again["offers"][1]["expiresAt"] == T0 + 10 + 60_000
    assert again["expiresAt"] == first["offers"][0]["expiresAt"]  # covers the kept offer
    answer = ok(server, "alice", Method.GET_OFFER_ANSWER, T0 + 11, offerId=id_a)
    assert (answer["sdp"], answer["answererId"]) == ("answer", "bob")
    for reader, seen in (("alice", {"a": 1}), ("bob", {"o": 1})):
        got = ok(server, reader, Method.GET_ICE_CANDIDATES, T0 + 11, offerId=id_a)
        assert [c["candidate"] for c in got["candidates"]] == [seen]
    assert ok(server, "bob", Method.GET_SERVICE, T0 + 11, serviceFqn=FQN)["offerId"] == id_c
    # Nothing answered any more that is still alive: a plain replacement again.
    late = T0 + 120_000
    fresh = publish(server, "v=0 d", now=late)
    assert fresh["serviceId"] != first["serviceId"]
    assert [o.sdp for o in server.offers] == ["v=0 d"]


def test_publish_errors_in_server_order() -> None:
    server = FakeSignalingServer()
    pub = Method.PUBLISH_SERVICE
    assert error(server, "", pub, T0, serviceFqn=FQN) == "Username required for service publishing"
    assert error(server, "alice", pub, T0, serviceFqn="chat") == (
        "Service FQN must be in format: service:version[@username]"
    )
    assert error(server, "alice", pub, T0, serviceFqn="chat:1.0.0") == (
        "Service FQN must include username"
    )
    assert error(server, "bob", pub, T0, serviceFqn=FQN, offers=[]) == (
        "Service FQN username must match authenticated username"
    )
    assert error(server, "alice", pub, T0, serviceFqn=FQN, offers=[]) == (
        "Must provide at least one offer"
    )
    assert error(server, "alice", pub, T0, serviceFqn=FQN, offers=[{"sdp": "v"}, {"sdp": " "}]) == (
        "Invalid offer at index 1: SDP cannot be empty"
    )
    assert error(server, "Alice!", Method.POLL, T0).startswith("Username must be lowercase")


def test_duplicate_sdp_is_atomic_in_ours_and_orphans_in_upstream() -> None:
    for mode, orphan in (("ours", False), ("upstream", True)):
        server = FakeSignalingServer(mode=mode)  # type: ignore[arg-type]
        offers = [{"sdp": "same"}, {"sdp": "same"}]
        outcome = server.call(
            "alice",
            RpcRequest(method=Method.PUBLISH_SERVICE, params={"serviceFqn": FQN, "offers": offers}),
            T0,
        )
        assert outcome == RpcFailed(error="UNIQUE constraint failed: offers.id")
        assert bool(server.services) is orphan
        expected = "Service has no available offers" if orphan else "Service not found"
        assert error(server, "bob", Method.GET_SERVICE, T0, serviceFqn=FQN) == expected


def test_answer_flow_discovery_and_poll() -> None:
    server = FakeSignalingServer()
    ids = [o["offerId"] for o in publish(server, "v=0 a", "v=0 b")["offers"]]
    found = ok(server, "bob", Method.GET_SERVICE, T0 + 1, serviceFqn="chat:1.0.0")
    assert found["offerId"] == ids[0]
    assert error(server, "alice", Method.GET_OFFER_ANSWER, T0 + 1, offerId=ids[0]) == (
        "Offer not yet answered"
    )
    ok(server, "bob", Method.ANSWER_OFFER, T0 + 5, offerId=ids[0], sdp="answer")
    assert error(server, "carol", Method.ANSWER_OFFER, T0 + 6, offerId=ids[0], sdp="a") == (
        "Offer already answered"
    )
    assert error(server, "bob", Method.GET_OFFER_ANSWER, T0 + 6, offerId=ids[0]) == (
        "Not authorized to access this offer"
    )
    # Direct lookup moves on to the next free offer.
    assert ok(server, "bob", Method.GET_SERVICE, T0 + 6, serviceFqn=FQN)["offerId"] == ids[1]
    ok(server, "bob", Method.ADD_ICE_CANDIDATES, T0 + 7, offerId=ids[0], candidates=[{"c": 1}])
    polled = ok(server, "alice", Method.POLL, T0 + 8, since=T0 + 4)
    assert [a["answererId"] for a in polled["answers"]] == ["bob"]
    assert polled["iceCandidates"][ids[0]][0]["role"] == "answerer"
    assert ok(server, "alice", Method.POLL, T0 + 8, since=T0 + 7) == {
        "answers": [],
        "iceCandidates": {},
    }
    # Expiry: every read filters expires_at > now.
    gone = T0 + 300_000
    assert error(server, "bob", Method.GET_SERVICE, gone, serviceFqn=FQN) == "Service not found"
    assert error(server, "bob", Method.GET_ICE_CANDIDATES, gone, offerId=ids[0]) == (
        "Offer not found"
    )


def test_ice_roles_follow_ownership() -> None:
    server = FakeSignalingServer()
    offer_id = publish(server, "v=0")["offers"][0]["offerId"]
    ok(server, "alice", Method.ADD_ICE_CANDIDATES, T0, offerId=offer_id, candidates=[{"o": 1}])
    ok(server, "bob", Method.ADD_ICE_CANDIDATES, T0, offerId=offer_id, candidates=[{"a": 1}])
    seen_by_bob = ok(server, "bob", Method.GET_ICE_CANDIDATES, T0, offerId=offer_id, since=0)
    seen_by_alice = ok(server, "alice", Method.GET_ICE_CANDIDATES, T0, offerId=offer_id)
    assert [c["candidate"] for c in seen_by_bob["candidates"]] == [{"o": 1}]
    assert [c["candidate"] for c in seen_by_alice["candidates"]] == [{"a": 1}]
    assert "role" not in seen_by_bob["candidates"][0]


@pytest.mark.parametrize("mode", ["ours", "upstream"])
def test_b5_created_at_collisions_only_upstream(mode: str) -> None:
    server = FakeSignalingServer(mode=mode)  # type: ignore[arg-type]
    offer_id = publish(server, "v=0")["offers"][0]["offerId"]
    add = Method.ADD_ICE_CANDIDATES
    ok(server, "bob", add, T0, offerId=offer_id, candidates=[{"i": i} for i in range(5)])
    seen = ok(server, "alice", Method.GET_ICE_CANDIDATES, T0 + 1, offerId=offer_id)["candidates"]
    cursor = max(c["createdAt"] for c in seen)
    ok(server, "bob", add, T0 + 1, offerId=offer_id, candidates=[{"late": True}])
    later = ok(server, "alice", Method.GET_ICE_CANDIDATES, T0 + 2, offerId=offer_id, since=cursor)
    lost = later["candidates"] == []
    assert lost is (mode == "upstream")


@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=6))
def test_ours_created_at_strictly_increasing(batch_sizes: list[int]) -> None:
    server = FakeSignalingServer()
    offer_id = publish(server, "v=0")["offers"][0]["offerId"]
    for size in batch_sizes:  # all in the same millisecond: the worst case for B5
        candidates = [{"n": n} for n in range(size)]
        ok(server, "bob", Method.ADD_ICE_CANDIDATES, T0, offerId=offer_id, candidates=candidates)
    stamps = [c.created_at for c in server.candidates]
    assert stamps == sorted(set(stamps))


def test_fail_next_can_lose_a_reply_after_executing() -> None:
    server = FakeSignalingServer()
    server.fail_next(Method.PUBLISH_SERVICE, error="HTTP 502: Bad Gateway", execute=True)
    outcome = server.call(
        "alice",
        RpcRequest(
            method=Method.PUBLISH_SERVICE, params={"serviceFqn": FQN, "offers": [{"sdp": "v"}]}
        ),
        T0,
    )
    assert outcome == RpcFailed(error="HTTP 502: Bad Gateway", transport=True)
    assert len(server.offers) == 1  # the server did the work; the client never heard
    publish(server, "v=0 next")  # the fault was for one call only
    assert server.calls[0].outcome == outcome


def test_get_user_reports_claims() -> None:
    server = FakeSignalingServer()
    assert ok(server, "x", Method.GET_USER, T0, username="alice") == {
        "username": "alice",
        "available": True,
    }
    publish(server, "v=0")
    claimed = ok(server, "x", Method.GET_USER, T0, username="alice")
    assert claimed["available"] is False
    assert claimed["claimedAt"] == T0
