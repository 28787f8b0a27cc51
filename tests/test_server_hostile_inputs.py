"""Hostile inputs found by an adversarial review, each answered cleanly over real HTTP.

Every case here once produced ``Internal server error`` (or a bare HTTP 500), stored
far more than a key, or let one small request cost far more than its share.  Each test
runs against both backends.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from rondevu_server import messages
from rondevu_server.config import ServerConfig
from rondevu_server.server import RondevuServer
from tests.rondevu_server_testing import BACKENDS, Peer, running_server, sdp, unique

HUGE_NUMBERS = [2**63, 2**64 + 7, 1e30, 1e308]


@pytest.mark.parametrize("backend", BACKENDS)
def test_numbers_beyond_storage_integers_are_answered(backend: str) -> None:
    with running_server(backend) as srv:
        alice, bob = Peer("a"), Peer("b")
        name = unique("svc")
        offer = srv.publish(alice, name)["offers"][0]["offerId"]
        srv.ok(bob, "answerOffer", {"offerId": offer, "sdp": sdp()})
        for huge in HUGE_NUMBERS:
            polled = srv.ok(alice, "poll", {"since": huge})
            assert polled["answers"] == []
            ice = srv.ok(bob, "getIceCandidates", {"offerId": offer, "since": huge})
            assert ice["candidates"] == []
            page = {"serviceFqn": f"{name}:1.0.0", "limit": 10, "offset": huge}
            assert srv.ok(bob, "getService", page)["services"] == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_get_user_echoes_no_nested_value(backend: str) -> None:
    with running_server(backend) as srv:
        deep = "[" * 1000 + '"x"' + "]" * 1000  # beyond what any JSON encoder will write
        probe = '{"method":"getUser","message":"m","signature":"s","params":{"username":%s}}'
        batch = "[" + ",".join(probe % name for name in (deep, '"nobody-here"', "42")) + "]"
        response = srv.http.post(
            "/rpc", content=batch, headers={"content-type": "application/json"}
        )
        assert response.status_code == 200
        first, second, third = response.json()
        assert first == {"success": True, "result": {"available": True}}
        assert second["result"] == {"username": "nobody-here", "available": True}
        assert third["result"] == {"username": 42, "available": True}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_claim_stores_the_canonical_key(backend: str) -> None:
    with running_server(backend) as srv:
        peer = Peer("k")
        standard = peer.keypair.public_key
        url_safe = base64.urlsafe_b64encode(base64.b64decode(standard)).decode().rstrip("=")
        body = peer.call("poll", {}, now=srv.clock.now)
        body["publicKey"] = "  " + url_safe + "\n"
        assert srv.post(body).json()["success"] is True
        probe = {"method": "getUser", "message": "m", "signature": "s"}
        user = srv.post({**probe, "params": {"username": peer.username}}).json()["result"]
        assert user["publicKey"] == standard
        # the same key spelled differently is still the same key: one key, one name
        twin = Peer("k")
        twin.keypair = peer.keypair
        body = twin.call("poll", {}, now=srv.clock.now)
        body["publicKey"] = url_safe
        assert srv.post(body).json()["error"] == messages.KEY_HAS_OTHER_NAME


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_padded_key_is_refused_not_stored(backend: str) -> None:
    with running_server(backend) as srv:
        peer = Peer("p")
        body = peer.call("poll", {}, now=srv.clock.now)
        body["publicKey"] = " " * 2_000_000 + peer.keypair.public_key
        reply = srv.post(body).json()
        assert reply == {"success": False, "error": messages.INVALID_SIGNATURE_CLAIM}
        probe = {"method": "getUser", "message": "m", "signature": "s"}
        user = srv.post({**probe, "params": {"username": peer.username}}).json()["result"]
        assert user["available"] is True


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_over_long_version_is_a_validation_error(backend: str) -> None:
    with running_server(backend) as srv:
        alice = Peer("a")
        version = "1.0.0-" + "a1" * 1500
        params = {"serviceFqn": f"chat:{version}@{alice.username}", "offers": [{"sdp": sdp()}]}
        assert srv.error(alice, "publishService", params) == "Version must be 1-128 characters"
        version = "1.0.0-" + "a" * 122  # exactly 128 characters
        params = {"serviceFqn": f"chat:{version}@{alice.username}", "offers": [{"sdp": sdp()}]}
        assert srv.ok(alice, "publishService", params)["serviceFqn"].endswith(alice.username)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_stops_running_calls_once_its_reply_is_too_large(backend: str) -> None:
    limit = 20_000
    with running_server(backend, max_response_bytes=limit) as srv:
        name = unique("big")
        for _ in range(3):
            owner = Peer("o")
            big = [{"sdp": sdp() + "a=x:" + "y" * 8_000} for _ in range(1)]
            fqn = f"{name}:1.0.0@{owner.username}"
            srv.ok(owner, "publishService", {"serviceFqn": fqn, "offers": big})
        reader = Peer("r")
        page = {"serviceFqn": f"{name}:1.0.0", "limit": 100}
        calls = [reader.call("getService", page, now=srv.clock.now) for _ in range(10)]
        response = srv.post(calls)
        assert response.status_code == 200
        replies = response.json()
        assert len(replies) == 10
        ran = [r for r in replies if r["success"]]
        assert 1 <= len(ran) < 10
        assert all(len(r["result"]["services"]) == 3 for r in ran)
        skipped = replies[len(ran) :]
        text = messages.BATCH_REPLY_TOO_LARGE.format(limit=limit)
        assert skipped == [{"success": False, "error": text}] * len(skipped)
        assert len(response.content) < limit + 2 * len(json.dumps(ran[0]))


def test_the_rate_limit_counts_each_call_of_a_batch() -> None:
    with running_server(
        "sqlite", rate_limit_loopback=True, rate_limit_per_second=0.001, rate_limit_burst=5
    ) as srv:
        peer = Peer("r")
        batch = [peer.call("poll", {}, now=srv.clock.now) for _ in range(5)]
        assert srv.post(batch).status_code == 200  # five calls: the whole burst
        assert srv.post(batch[0]).status_code == 429  # per request, 4 would be left


def test_a_batch_lets_other_requests_in_between_its_calls() -> None:
    """In-memory SQLite runs on the event loop: a batch must not hold it for all its calls."""
    probe = {"method": "getUser", "message": "m", "signature": "s", "params": {"username": "x"}}
    finished: list[str] = []

    async def scenario() -> None:
        server = await RondevuServer.open(ServerConfig(db=":memory:"))
        try:

            async def send(tag: str, body: Any) -> None:
                status, _ = await server.handle_rpc_body(json.dumps(body).encode())
                assert status == 200
                finished.append(tag)

            async with asyncio.TaskGroup() as group:
                group.create_task(send("batch", [probe] * 50))
                group.create_task(send("single", probe))
        finally:
            await server.aclose()

    asyncio.run(scenario())
    assert finished == ["single", "batch"]


def test_a_batch_larger_than_the_burst_passes_once_the_client_has_rested() -> None:
    """A full bucket lets any batch through (into debt); it was refused for ever when the
    parse-time token had just been taken from that full bucket."""
    clock = [1_765_700_000_000]
    peer = Peer("b")

    async def scenario() -> list[int]:
        config = ServerConfig(db=":memory:", rate_limit_per_second=10, rate_limit_burst=5)
        server = await RondevuServer.open(config, clock=lambda: clock[0])
        statuses = []
        try:
            for _ in range(3):
                clock[0] += 60_000  # a minute of rest: the bucket is full again
                batch = [peer.call("poll", {}, now=clock[0]) for _ in range(10)]
                status, _ = await server.handle_rpc_body(json.dumps(batch).encode(), "203.0.113.7")
                statuses.append(status)
            status, _ = await server.handle_rpc_body(b"not json", "203.0.113.7")
            statuses.append(status)  # in debt: refused before parsing
        finally:
            await server.aclose()
        return statuses

    assert asyncio.run(scenario()) == [200, 200, 200, 429]
