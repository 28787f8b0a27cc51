"""Black-box HTTP tests of every route, RPC and spec error case (docs/protocol.md §2-§12).

Each test runs against SQLite and, when RONDEVU_TEST_POSTGRES_DSN is set, PostgreSQL:
a real uvicorn server on 127.0.0.1 with a fake clock, spoken to over HTTP with signed
calls exactly as a 0.18.9 client builds them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rondevu_core.rules.offer_id import offer_id_for_sdp
from tests.rondevu_server_testing import (
    BACKENDS,
    START,
    Peer,
    RunningServer,
    running_server,
    sdp,
    unique,
)


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    with running_server(request.param) as running:
        yield running


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """A server of its own, for tests that move the clock."""
    with running_server(request.param) as running:
        yield running


# -- §2 transport -------------------------------------------------------------------


def test_routes_and_cors(srv: RunningServer) -> None:
    root = srv.http.get("/")
    assert root.status_code == 200
    assert root.content == (  # the 0.5.4 fields, then ours (long-polling.md)
        b'{"version":"unknown","name":"Rondevu","description":'
        b'"WebRTC signaling with RPC interface and Ed25519 authentication",'
        b'"extensions":{"longPoll":{"maxWaitMs":25000},"state":{"path":"/state","maxLimit":100}}}'
    )
    assert root.headers["content-type"] == "application/json"
    assert root.headers["vary"] == "Origin"
    assert "access-control-allow-origin" not in root.headers
    health = srv.http.get("/health", headers={"Origin": "https://a.example"})
    assert health.json() == {"status": "ok", "timestamp": START, "version": "unknown"}
    assert health.headers["access-control-allow-origin"] == "https://a.example"
    assert health.headers["access-control-expose-headers"] == "Content-Type"
    for method, path in [("GET", "/rpc"), ("POST", "/nope"), ("DELETE", "/"), ("POST", "/")]:
        missing = srv.http.request(method, path)
        assert missing.status_code == 404
        assert missing.content == b'{"error":"Not found. Use POST /rpc for all API calls."}'
    pre = srv.http.options("/rpc", headers={"Origin": "https://b.example"})
    assert pre.status_code == 204
    assert pre.content == b""
    assert pre.headers["access-control-allow-origin"] == "https://b.example"
    assert pre.headers["access-control-allow-methods"] == "GET,POST,OPTIONS"
    assert pre.headers["access-control-allow-headers"] == "Content-Type,Origin"
    assert pre.headers["access-control-max-age"] == "86400"
    assert pre.headers["vary"] == "Origin, Access-Control-Request-Headers"


def test_cors_origin_list() -> None:
    with running_server("sqlite", cors_origins=("https://x.example", "https://y.example")) as s:
        listed = s.http.get("/", headers={"Origin": "https://y.example"})
        assert listed.headers["access-control-allow-origin"] == "https://y.example"
        other = s.http.get("/", headers={"Origin": "https://evil.example"})
        assert other.headers["access-control-allow-origin"] == "https://x.example"


def test_http_400_cases(srv: RunningServer) -> None:
    bad = srv.http.post("/rpc", content=b"{not json")
    assert (bad.status_code, bad.content) == (
        400,
        b'{"success":false,"error":"Invalid request format"}',
    )
    nan = srv.http.post("/rpc", content=b'{"method":NaN}')
    assert nan.status_code == 400
    empty = srv.http.post("/rpc", content=b"[]")
    assert (empty.status_code, empty.content) == (400, b'{"error":"Empty request array"}')
    many = srv.post([{"method": "getUser"}] * 101)
    assert (many.status_code, many.content) == (
        400,
        b'{"error":"Too many requests in batch (max 100)"}',
    )
    full = srv.post([{"method": "getUser", "message": "m", "signature": "s"}] * 100)
    assert full.status_code == 200
    assert len(full.json()) == 100
    deep = srv.http.post("/rpc", content=b"[" * 100_000 + b"]" * 100_000)
    assert deep.status_code == 400


def test_odd_bodies(srv: RunningServer) -> None:
    assert srv.http.post("/rpc", content=b"null").json() == {
        "success": False,
        "error": "Cannot destructure property 'method' of 'request' as it is null.",
    }
    assert srv.post(42).json() == {"success": False, "error": "Missing or invalid method"}
    plain = srv.http.post(
        "/rpc",
        content=b'{"method":"getUser","message":"m","signature":"s","params":{"username":"zz"}}',
        headers={"content-type": "text/plain"},
    )
    assert plain.json() == {"success": True, "result": {"username": "zz", "available": True}}


def test_envelope_errors_in_order(srv: RunningServer) -> None:
    cases: list[tuple[Any, str]] = [
        ({}, "Missing or invalid method"),
        ({"method": ""}, "Missing or invalid method"),
        ({"method": 5, "message": "m"}, "Missing or invalid method"),
        ({"method": "poll"}, "Missing or invalid message"),
        ({"method": "poll", "message": ""}, "Missing or invalid message"),
        ({"method": "poll", "message": "m"}, "Missing or invalid signature"),
        ({"method": "nope", "message": "m", "signature": "s"}, "Unknown method: nope"),
        (
            {"method": "claimUsername", "message": "m", "signature": "s"},
            "Unknown method: claimUsername",
        ),
        ([], "Missing or invalid method"),
    ]
    replies = srv.post([body for body, _ in cases]).json()
    assert [reply["error"] for reply in replies] == [text for _, text in cases]


def test_batch_runs_in_order_and_independently(srv: RunningServer) -> None:
    alice = Peer("a")
    fqn = f"{unique('svc')}:1.0.0@{alice.username}"
    now = srv.clock.now
    offer_sdp = sdp()
    batch = [
        alice.call("publishService", {"serviceFqn": fqn, "offers": [{"sdp": offer_sdp}]}, now=now),
        alice.call("getOfferAnswer", {"offerId": "f" * 64}, now=now),
        alice.call("getService", {"serviceFqn": fqn}, now=now),
    ]
    replies = srv.post(batch).json()
    assert [r["success"] for r in replies] == [True, False, True]
    assert replies[1]["error"] == "Offer not found"
    assert replies[2]["result"]["offerId"] == offer_id_for_sdp(offer_sdp)


# -- §4, §5 authentication and usernames ---------------------------------------------


def test_auto_claim_and_get_user(srv: RunningServer) -> None:
    alice = Peer("a")
    probe = Peer("probe")
    assert srv.ok(probe, "getUser", {"username": alice.username}) == {
        "username": alice.username,
        "available": True,
    }
    assert srv.ok(alice, "poll", {}) == {"answers": [], "iceCandidates": {}}
    claimed = srv.ok(probe, "getUser", {"username": alice.username})
    assert claimed == {
        "username": alice.username,
        "available": False,
        "claimedAt": START,
        "expiresAt": START + 365 * 24 * 3600 * 1000,
        "publicKey": alice.keypair.public_key,
    }
    assert srv.ok(probe, "getUser", {}) == {"available": True}
    assert srv.ok(probe, "getUser", {"username": "NOT VALID!"}) == {
        "username": "NOT VALID!",
        "available": True,
    }


def test_auth_errors(srv: RunningServer) -> None:
    alice, mallory = Peer("a"), Peer("m")
    srv.ok(alice, "poll", {})
    now = srv.clock.now
    # the stored key wins: a different key for a claimed name fails
    forged = mallory.call("poll", {}, now=now, message=f"poll:{alice.username}:{now}")
    assert srv.post(forged).json()["error"] == "Invalid signature"
    fresh_name = unique("n")
    assert (
        srv.error(mallory, "poll", {}, message=f"poll:{fresh_name}:{now}", with_key=False)
        == f'Username "{fresh_name}" is not claimed and no public key provided for auto-claim.'
    )
    bad_sig = mallory.call("poll", {}, now=now, message=f"poll:{fresh_name}:{now}")
    bad_sig["signature"] = alice.keypair.sign(bad_sig["message"])
    assert srv.post(bad_sig).json()["error"] == "Invalid signature for auto-claim"
    assert srv.error(mallory, "poll", {}, message=f"poll:AB:{now}") == (
        "Username must be at least 3 characters"
    )
    assert srv.error(mallory, "poll", {}, message=f"poll:Bad_Name:{now}").startswith(
        "Username must be lowercase alphanumeric"
    )
    assert srv.error(alice, "poll", {}, message="nocolon") == "Username required"
    assert srv.error(alice, "publishService", {}, message="nocolon") == (
        "Username required for service publishing"
    )
    assert srv.error(alice, "poll", {}, message=f"poll:{alice.username}") == (
        "Invalid message format: must have at least action:username:timestamp"
    )
    assert srv.error(alice, "poll", {}, message=f"poll:{alice.username}:abc") == (
        "Invalid timestamp in message"
    )
    stale = now - 300_001
    assert srv.error(alice, "poll", {}, message=f"poll:{alice.username}:{stale}") == (
        "Timestamp too old or too far in future (tolerance: 300s)"
    )
    # trailing junk after the digits is accepted, like JavaScript parseInt
    assert srv.rpc(alice, "poll", {}, message=f"poll:{alice.username}:{now}abc")["success"]


def test_stale_request_claims_nothing(srv: RunningServer) -> None:
    """S2: the original claims before checking the timestamp; we do not."""
    bob = Peer("b")
    stale = srv.clock.now - 600_000
    assert srv.error(bob, "poll", {}, message=f"poll:{bob.username}:{stale}").startswith(
        "Timestamp too old"
    )
    assert srv.ok(Peer(), "getUser", {"username": bob.username})["available"] is True


def test_signature_bound_to_method_and_params(srv: RunningServer) -> None:
    """S1 in part: a signature made for one call does not authorise another."""
    alice = Peer("a")
    published = srv.publish(alice, unique("svc"))
    fqn = published["serviceFqn"]
    now = srv.clock.now
    poll_message = f"poll:{alice.username}:{now}"
    assert srv.error(alice, "deleteService", {"serviceFqn": fqn}, message=poll_message) == (
        "Signed message does not match this call"
    )
    other = f"deleteService:{alice.username}:other:1.0.0@{alice.username}:{now}"
    assert srv.error(alice, "deleteService", {"serviceFqn": fqn}, message=other) == (
        "Signed message does not match this call"
    )
    signed_since = f"getIceCandidates:{alice.username}:{'a' * 64}:5:{now}"
    params = {"offerId": "a" * 64, "since": 6}
    assert srv.error(alice, "getIceCandidates", params, message=signed_since) == (
        "Signed message does not match this call"
    )
    assert srv.ok(alice, "getService", {"serviceFqn": fqn})["serviceFqn"] == fqn


def test_one_key_one_name(srv: RunningServer) -> None:
    alice = Peer("a")
    srv.ok(alice, "poll", {})
    second = unique("second")
    now = srv.clock.now
    assert srv.error(alice, "poll", {}, message=f"poll:{second}:{now}") == (
        "This public key has already claimed a different username"
    )


def test_expired_username_revival_and_cleanup(fresh: RunningServer) -> None:
    alice, mallory = Peer("a"), Peer("m")
    fresh.ok(alice, "poll", {})
    fresh.clock.advance(365 * 24 * 3600 * 1000 + 1)
    message = f"poll:{alice.username}:{fresh.clock.now}"
    assert fresh.error(mallory, "poll", {}, message=message) == (
        "Username already claimed by different public key"
    )
    fresh.ok(alice, "poll", {})  # the original key revives it
    fresh.clock.advance(365 * 24 * 3600 * 1000 + 1)
    fresh.run(fresh.server.storage.cleanup(fresh.clock.now))
    message = f"poll:{alice.username}:{fresh.clock.now}"
    assert fresh.rpc(mallory, "poll", {}, message=message)["success"] is True  # S9


# -- §7.2 publishService ---------------------------------------------------------------


def test_publish_checks_in_order(srv: RunningServer) -> None:
    alice = Peer("a")
    me = alice.username
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "Service FQN must be a string"),
        ({"serviceFqn": "nocolon"}, "Service FQN must be in format: service:version[@username]"),
        (
            {"serviceFqn": "Chat:1.0.0@x"},
            "Service name must be lowercase alphanumeric with optional dots/dashes",
        ),
        (
            {"serviceFqn": "chat:1.0@x"},
            "Version must be semantic versioning (e.g., 1.0.0, 2.1.3-beta)",
        ),
        ({"serviceFqn": "chat:1.0.0"}, "Service FQN must include username"),
        (
            {"serviceFqn": "chat:1.0.0@someone"},
            "Service FQN username must match authenticated username",
        ),
        ({"serviceFqn": f"chat:1.0.0@{me}"}, "Must provide at least one offer"),
        ({"serviceFqn": f"chat:1.0.0@{me}", "offers": []}, "Must provide at least one offer"),
        ({"serviceFqn": f"chat:1.0.0@{me}", "offers": "x"}, "Must provide at least one offer"),
        (
            {"serviceFqn": f"chat:1.0.0@{me}", "offers": [{"sdp": "x"}] * 101},
            "Too many offers (max 100)",
        ),
        (
            {"serviceFqn": f"chat:1.0.0@{me}", "offers": [{"sdp": sdp()}, 5]},
            "Invalid offer at index 1: must be an object",
        ),
        (
            {"serviceFqn": f"chat:1.0.0@{me}", "offers": [{"sdp": 5}]},
            "Invalid offer at index 0: missing or invalid SDP",
        ),
        (
            {"serviceFqn": f"chat:1.0.0@{me}", "offers": [[]]},
            "Invalid offer at index 0: missing or invalid SDP",
        ),
        (
            {"serviceFqn": f"chat:1.0.0@{me}", "offers": [{"sdp": " \r\n "}]},
            "Invalid offer at index 0: SDP cannot be empty",
        ),
    ]
    for params, text in cases:
        assert srv.error(alice, "publishService", params) == text, params


def test_publish_result_ttl_and_replace(srv: RunningServer) -> None:
    alice = Peer("a")
    name = unique("svc")
    fqn = f"{name}:1.2.3@{alice.username}"
    offer_sdp = sdp()
    now = srv.clock.now
    first = srv.ok(
        alice, "publishService", {"serviceFqn": fqn, "offers": [{"sdp": offer_sdp}], "ttl": 1000}
    )
    # The original's keys in its order, then our extension (README: deviations).
    assert list(first) == [
        "serviceId",
        "username",
        "serviceFqn",
        "offers",
        "createdAt",
        "expiresAt",
        "keepsAnsweredOffers",
    ]
    assert first["keepsAnsweredOffers"] is True
    assert first["username"] == alice.username
    assert first["serviceFqn"] == fqn
    assert first["expiresAt"] == now + 60_000  # ttl clamped up
    assert first["offers"] == [
        {
            "offerId": offer_id_for_sdp(offer_sdp),
            "sdp": offer_sdp,
            "createdAt": now,
            "expiresAt": now + 60_000,
        }
    ]
    big = srv.ok(
        alice, "publishService", {"serviceFqn": fqn, "offers": [{"sdp": sdp()}], "ttl": 10**12}
    )
    assert big["expiresAt"] == now + 86_400_000
    default = srv.ok(alice, "publishService", {"serviceFqn": fqn, "offers": [{"sdp": sdp()}]})
    assert default["expiresAt"] == now + 60_000
    # re-publishing replaced the earlier offers
    old = big["offers"][0]["offerId"]
    answer = {"offerId": old, "sdp": sdp()}
    assert srv.error(Peer("b"), "answerOffer", answer) == "Offer not found"


def test_identical_sdp_is_refused_without_orphans(srv: RunningServer) -> None:
    """S5: collisions are refused cleanly, and the whole publish is undone."""
    alice, bob = Peer("a"), Peer("b")
    shared = sdp()
    name = unique("svc")
    srv.ok(
        alice,
        "publishService",
        {"serviceFqn": f"{name}:1.0.0@{alice.username}", "offers": [{"sdp": shared}]},
    )
    bob_fqn = f"{name}:1.0.0@{bob.username}"
    keep = srv.ok(bob, "publishService", {"serviceFqn": bob_fqn, "offers": [{"sdp": sdp()}]})
    clash = {"serviceFqn": bob_fqn, "offers": [{"sdp": sdp()}, {"sdp": shared}]}
    assert srv.error(bob, "publishService", clash) == (
        "An offer with an identical SDP already exists"
    )
    # bob's previous service is untouched: nothing of the failed publish happened
    assert (
        srv.ok(bob, "getService", {"serviceFqn": bob_fqn})["offerId"]
        == keep["offers"][0]["offerId"]
    )
    twice = {"serviceFqn": bob_fqn, "offers": [{"sdp": shared + "x"}, {"sdp": shared + "x"}]}
    assert srv.error(bob, "publishService", twice) == (
        "Invalid offer at index 1: duplicate SDP in this request"
    )


# -- §7.3 getService ---------------------------------------------------------------------


def test_get_service_direct(srv: RunningServer) -> None:
    alice, bob = Peer("a"), Peer("b")
    name = unique("svc")
    published = srv.publish(alice, name, count=2)
    fqn = published["serviceFqn"]
    entry = srv.ok(bob, "getService", {"serviceFqn": fqn})
    first = published["offers"][0]
    assert entry == {
        "serviceId": published["serviceId"],
        "username": alice.username,
        "serviceFqn": fqn,
        "offerId": first["offerId"],
        "sdp": first["sdp"],
        "createdAt": published["createdAt"],
        "expiresAt": published["expiresAt"],
    }
    srv.ok(bob, "answerOffer", {"serviceFqn": fqn, "offerId": first["offerId"], "sdp": sdp()})
    assert (
        srv.ok(bob, "getService", {"serviceFqn": fqn})["offerId"]
        == published["offers"][1]["offerId"]
    )
    srv.ok(Peer("c"), "answerOffer", {"offerId": published["offers"][1]["offerId"], "sdp": sdp()})
    assert srv.error(bob, "getService", {"serviceFqn": fqn}) == "Service has no available offers"
    missing = f"{name}:1.0.0@{bob.username}"
    assert srv.error(bob, "getService", {"serviceFqn": missing}) == "Service not found"
    assert srv.error(bob, "getService", {"serviceFqn": f"{name}:9.0.0@{alice.username}"}) == (
        "Service not found"
    )


def test_get_service_random_and_anonymous(srv: RunningServer) -> None:
    alice, bob = Peer("a"), Peer("b")
    name = unique("svc")
    assert srv.error(bob, "getService", {"serviceFqn": f"{name}:1.0.0"}) == "No services found"
    published = srv.publish(alice, name)
    found = srv.ok(bob, "getService", {"serviceFqn": f"{name}:1.0.0"})
    assert found["offerId"] == published["offers"][0]["offerId"]
    # version matching is exact (§6)
    assert srv.error(bob, "getService", {"serviceFqn": f"{name}:1.0.1"}) == "No services found"
    # a message without ':' is anonymous discovery (S13, kept for compatibility)
    anonymous = {
        "method": "getService",
        "message": "x",
        "signature": "y",
        "params": {"serviceFqn": f"{name}:1.0.0"},
    }
    assert srv.post(anonymous).json()["result"]["offerId"] == found["offerId"]


def test_get_service_paginated(srv: RunningServer) -> None:
    name = unique("svc")
    owners = [Peer("o") for _ in range(3)]
    published = []
    for owner in owners:
        published.append(srv.publish(owner, name))
        srv.clock.advance(1)
    bob = Peer("b")
    page = srv.ok(bob, "getService", {"serviceFqn": f"{name}:1.0.0@ignored", "limit": 2})
    assert (page["count"], page["limit"], page["offset"]) == (2, 2, 0)
    assert [s["username"] for s in page["services"]] == [owners[2].username, owners[1].username]
    rest = srv.ok(bob, "getService", {"serviceFqn": f"{name}:1.0.0", "limit": 2, "offset": 2})
    assert [s["username"] for s in rest["services"]] == [owners[0].username]
    clamped = srv.ok(
        bob, "getService", {"serviceFqn": f"{name}:1.0.0", "limit": 1000, "offset": -5}
    )
    assert (clamped["limit"], clamped["offset"], clamped["count"]) == (100, 0, 3)
    low = srv.ok(bob, "getService", {"serviceFqn": f"{name}:1.0.0", "limit": 0})
    assert low["limit"] == 1
    first_offer = published[0]["offers"][0]["offerId"]
    srv.ok(bob, "answerOffer", {"offerId": first_offer, "sdp": sdp()})
    after = srv.ok(bob, "getService", {"serviceFqn": f"{name}:1.0.0", "limit": 10})
    assert owners[0].username not in [s["username"] for s in after["services"]]


# -- §7.4 deleteService ------------------------------------------------------------------


def test_delete_service(srv: RunningServer) -> None:
    alice, bob = Peer("a"), Peer("b")
    published = srv.publish(alice, unique("svc"))
    fqn = published["serviceFqn"]
    assert srv.error(alice, "deleteService", {"serviceFqn": "chat:1.0.0"}) == (
        "Service FQN must include username"
    )
    assert srv.error(alice, "deleteService", {"serviceFqn": fqn + "x"}) == "Service not found"
    assert srv.error(bob, "deleteService", {"serviceFqn": fqn}) == (
        "Service not found or not owned by this username"
    )
    assert srv.ok(alice, "deleteService", {"serviceFqn": fqn}) == {"success": True}
    offer = published["offers"][0]["offerId"]
    assert srv.error(bob, "answerOffer", {"offerId": offer, "sdp": sdp()}) == "Offer not found"


# -- §7.5-§7.7 answers and poll ----------------------------------------------------------


def test_answer_and_get_offer_answer(srv: RunningServer) -> None:
    alice, bob, carol = Peer("a"), Peer("b"), Peer("c")
    published = srv.publish(alice, unique("svc"))
    offer = published["offers"][0]["offerId"]
    assert srv.error(bob, "answerOffer", {"offerId": offer}) == "Invalid SDP"
    assert srv.error(bob, "answerOffer", {"offerId": offer, "sdp": ""}) == "Invalid SDP"
    assert srv.error(bob, "answerOffer", {"offerId": offer, "sdp": "x" * 65_537}) == (
        "SDP too large (max 64KB)"
    )
    assert srv.error(bob, "answerOffer", {"offerId": "0" * 64, "sdp": "x"}) == "Offer not found"
    assert srv.error(alice, "getOfferAnswer", {"offerId": offer}) == "Offer not yet answered"
    answer_sdp = "x" * 65_536
    assert srv.ok(bob, "answerOffer", {"offerId": offer, "sdp": answer_sdp}) == {
        "success": True,
        "offerId": offer,
    }
    assert srv.error(carol, "answerOffer", {"offerId": offer, "sdp": "y"}) == (
        "Offer already answered"
    )
    assert srv.error(carol, "getOfferAnswer", {"offerId": offer}) == (
        "Not authorized to access this offer"
    )
    assert srv.error(carol, "getOfferAnswer", {"offerId": "1" * 64}) == "Offer not found"
    assert srv.ok(alice, "getOfferAnswer", {"offerId": offer}) == {
        "sdp": answer_sdp,
        "offerId": offer,
        "answererId": bob.username,
        "answeredAt": srv.clock.now,
    }


def test_answer_race_has_one_winner(srv: RunningServer) -> None:
    """S3: of many concurrent answers exactly one succeeds; the others are told."""
    alice = Peer("a")
    offer = srv.publish(alice, unique("svc"))["offers"][0]["offerId"]
    racers = [Peer("r") for _ in range(8)]
    for racer in racers:  # claim first so the race is only about the answer
        srv.ok(racer, "poll", {})
    bodies = [
        r.call("answerOffer", {"offerId": offer, "sdp": sdp()}, now=srv.clock.now) for r in racers
    ]

    async def race() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=srv.url) as client:
            replies = await asyncio.gather(*(client.post("/rpc", json=b) for b in bodies))
        return [reply.json() for reply in replies]

    replies = asyncio.run(race())
    assert sum(reply["success"] for reply in replies) == 1
    assert {reply.get("error") for reply in replies if not reply["success"]} == {
        "Offer already answered"
    }


def test_poll(srv: RunningServer) -> None:
    alice, bob = Peer("a"), Peer("b")
    published = srv.publish(alice, unique("svc"), count=2)
    first, second = (o["offerId"] for o in published["offers"])
    assert srv.ok(bob, "poll", {}) == {"answers": [], "iceCandidates": {}}
    answered_at = srv.clock.now
    srv.ok(bob, "answerOffer", {"offerId": first, "sdp": "answer-1"})
    srv.ok(bob, "addIceCandidates", {"offerId": first, "candidates": [{"candidate": "c1"}]})
    srv.ok(alice, "addIceCandidates", {"offerId": first, "candidates": [{"candidate": "own"}]})
    result = srv.ok(alice, "poll", {"since": 0})
    assert result["answers"] == [
        {
            "offerId": first,
            "serviceId": published["serviceId"],
            "answererId": bob.username,
            "sdp": "answer-1",
            "answeredAt": answered_at,
        }
    ]
    items = result["iceCandidates"][first]
    assert len(items) == 1
    assert list(items[0]) == ["id", "offerId", "username", "role", "candidate", "createdAt"]
    assert items[0]["username"] == bob.username
    assert items[0]["role"] == "answerer"
    assert items[0]["candidate"] == {"candidate": "c1"}
    assert second not in result["iceCandidates"]
    later = srv.ok(alice, "poll", {"since": items[0]["createdAt"]})
    assert later == {"answers": [], "iceCandidates": {}}
    assert srv.ok(alice, "poll", {"since": answered_at - 1})["answers"][0]["offerId"] == first


# -- §7.8, §7.9, §9 ICE candidates -------------------------------------------------------


def test_add_ice_candidates_errors(srv: RunningServer) -> None:
    alice = Peer("a")
    offer = srv.publish(alice, unique("svc"))["offers"][0]["offerId"]
    required = "Missing or invalid required parameter: candidates"
    assert srv.error(alice, "addIceCandidates", {"offerId": offer}) == required
    assert srv.error(alice, "addIceCandidates", {"offerId": offer, "candidates": []}) == required
    assert srv.error(alice, "addIceCandidates", {"offerId": offer, "candidates": {}}) == required
    assert srv.error(alice, "addIceCandidates", {"offerId": offer, "candidates": [{}, None]}) == (
        "Invalid candidate at index 1: must be an object"
    )
    assert srv.error(alice, "addIceCandidates", {"offerId": offer, "candidates": ["s"]}) == (
        "Invalid candidate at index 0: must be an object"
    )
    assert srv.error(alice, "addIceCandidates", {"offerId": "f" * 64, "candidates": [{}]}) == (
        "Offer not found"
    )
    assert srv.error(alice, "getIceCandidates", {"offerId": "f" * 64}) == "Offer not found"
    arrays = srv.ok(alice, "addIceCandidates", {"offerId": offer, "candidates": [[1, 2], {}]})
    assert arrays == {"count": 2, "offerId": offer}


def test_ice_exchange_and_monotonic_cursor(srv: RunningServer) -> None:
    """B5: createdAt strictly increases per offer, so since=max never skips."""
    alice, bob = Peer("a"), Peer("b")
    offer = srv.publish(alice, unique("svc"))["offers"][0]["offerId"]
    srv.ok(bob, "answerOffer", {"offerId": offer, "sdp": sdp()})
    many = [{"candidate": f"c{i}"} for i in range(60)]
    srv.ok(alice, "addIceCandidates", {"offerId": offer, "candidates": many})
    got = srv.ok(bob, "getIceCandidates", {"offerId": offer, "since": 0})
    assert got["offerId"] == offer
    stamps = [item["createdAt"] for item in got["candidates"]]
    assert [list(item) for item in got["candidates"]] == [["candidate", "createdAt"]] * 60
    assert stamps == sorted(set(stamps))
    cursor = stamps[-1]
    srv.ok(alice, "addIceCandidates", {"offerId": offer, "candidates": [{"candidate": "late"}]})
    late = srv.ok(bob, "getIceCandidates", {"offerId": offer, "since": cursor})["candidates"]
    assert [item["candidate"] for item in late] == [{"candidate": "late"}]
    assert late[0]["createdAt"] > cursor
    srv.ok(bob, "addIceCandidates", {"offerId": offer, "candidates": [{"candidate": "b1"}]})
    mine = srv.ok(alice, "getIceCandidates", {"offerId": offer})["candidates"]
    assert [item["candidate"] for item in mine] == [{"candidate": "b1"}]


def test_only_participants_exchange_candidates(srv: RunningServer) -> None:
    """S4: outsiders read nothing; the owner sees only its answerer's candidates."""
    alice, bob, mallory = Peer("a"), Peer("b"), Peer("m")
    offer = srv.publish(alice, unique("svc"))["offers"][0]["offerId"]
    srv.ok(alice, "addIceCandidates", {"offerId": offer, "candidates": [{"candidate": "a1"}]})
    # before answering, an honest answerer may already send and poll (v0.18.10)
    srv.ok(bob, "addIceCandidates", {"offerId": offer, "candidates": [{"candidate": "b-early"}]})
    srv.ok(mallory, "addIceCandidates", {"offerId": offer, "candidates": [{"candidate": "junk"}]})
    assert srv.ok(bob, "getIceCandidates", {"offerId": offer})["candidates"] == []
    assert srv.ok(alice, "getIceCandidates", {"offerId": offer})["candidates"] == []
    srv.ok(bob, "answerOffer", {"offerId": offer, "sdp": sdp()})
    owner_view = srv.ok(alice, "getIceCandidates", {"offerId": offer})["candidates"]
    assert [item["candidate"] for item in owner_view] == [{"candidate": "b-early"}]
    polled = srv.ok(alice, "poll", {})["iceCandidates"][offer]
    assert [item["username"] for item in polled] == [bob.username]
    answerer_view = srv.ok(bob, "getIceCandidates", {"offerId": offer})["candidates"]
    assert [item["candidate"] for item in answerer_view] == [{"candidate": "a1"}]
    assert srv.ok(mallory, "getIceCandidates", {"offerId": offer})["candidates"] == []
    assert srv.error(mallory, "addIceCandidates", {"offerId": offer, "candidates": [{}]}) == (
        "Not authorized to access this offer"
    )


# -- §8, §12 expiry ------------------------------------------------------------------------


def test_expiry_hides_everything(fresh: RunningServer) -> None:
    alice, bob = Peer("a"), Peer("b")
    name = unique("svc")
    published = fresh.publish(alice, name, ttl=60_000)
    offer = published["offers"][0]["offerId"]
    fresh.ok(bob, "answerOffer", {"offerId": offer, "sdp": sdp()})
    fresh.clock.advance(60_000)
    assert fresh.error(bob, "getService", {"serviceFqn": published["serviceFqn"]}) == (
        "Service not found"
    )
    assert fresh.error(bob, "getService", {"serviceFqn": f"{name}:1.0.0"}) == "No services found"
    page = fresh.ok(bob, "getService", {"serviceFqn": f"{name}:1.0.0", "limit": 5})
    assert page["services"] == []
    assert fresh.error(alice, "getOfferAnswer", {"offerId": offer}) == "Offer not found"
    assert fresh.error(bob, "getIceCandidates", {"offerId": offer}) == "Offer not found"
    assert fresh.ok(alice, "poll", {}) == {"answers": [], "iceCandidates": {}}
    fresh.run(fresh.server.storage.cleanup(fresh.clock.now))
    # the same SDP can be published again once the old offer expired
    again = {
        "serviceFqn": published["serviceFqn"],
        "offers": [{"sdp": published["offers"][0]["sdp"]}],
    }
    assert fresh.ok(alice, "publishService", again)["offers"][0]["offerId"] == offer


def test_internal_errors_hide_details() -> None:
    """S11: a storage failure becomes a generic error, never SQL or a traceback."""
    with running_server("sqlite") as running:
        alice = Peer("a")
        running.ok(alice, "poll", {})
        running.run(running.server.storage.close())
        reply = running.rpc(Peer("b"), "poll", {})
        assert reply == {"success": False, "error": "Internal server error"}
