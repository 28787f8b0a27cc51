"""Long polling (our extension, docs/long-polling.md) on a real server over HTTP.

Each held call is sent from a thread of its own (its own HTTP client), while the test
goes on with other calls; `wait_held` waits on the server's own registry until the call
is held, so no test relies on timing to know where the server is.  Waits that must end
by themselves are short (200 ms); waits that something else must end are long (20 s),
and the test only checks the call came back well before them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from rondevu_schemas import LongPollExtension, ServerInfo
from rondevu_server.longpoll import Signal, WaitRegistry, end_key, poll_key
from tests.rondevu_server_testing import BACKENDS, Peer, RunningServer, running_server, unique

LONG = 20_000
"""A wait that only news (or shutdown) may end in a test: it never runs out."""
BACK = 10.0
"""Seconds a held call has to come back once it has news: far below `LONG`."""
EMPTY_POLL: dict[str, Any] = {"answers": [], "iceCandidates": {}}
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 10.0.0.2 6000 typ host"}


@pytest.fixture(params=BACKENDS)
def srv(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    with running_server(request.param) as running:
        yield running


@contextmanager
def sender(srv: RunningServer) -> Iterator[Any]:
    """``send(body)``: POST ``body`` from another thread; a future of the decoded reply."""
    with (
        httpx.Client(base_url=srv.url, timeout=60) as http,
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):

        def send(body: Any) -> concurrent.futures.Future[Any]:
            return pool.submit(lambda: http.post("/rpc", json=body).json())

        yield send


def wait_held(srv: RunningServer, count: int = 1) -> None:
    """Return once the server holds exactly ``count`` calls."""
    srv.run(srv.server.waits.until_waiting(count))


def offer_pair(srv: RunningServer) -> tuple[Peer, Peer, str]:
    """Alice's published offer, answered by Bob: ``(alice, bob, offer id)``."""
    alice, bob = Peer("a"), Peer("b")
    offer = srv.publish(alice, unique("svc"))["offers"][0]["offerId"]
    srv.ok(bob, "answerOffer", {"offerId": offer, "sdp": "answer"})
    return alice, bob, offer


def ok(reply: Any) -> Any:
    assert reply["success"] is True, reply
    return reply["result"]


# -- held until news ----------------------------------------------------------------


def test_a_poll_is_held_until_an_answer_arrives(srv: RunningServer) -> None:
    alice, bob = Peer("a"), Peer("b")
    offer = srv.publish(alice, unique("svc"))["offers"][0]["offerId"]
    with sender(srv) as send:
        held = send(alice.call("poll", {"since": 0, "waitMs": LONG}, now=srv.clock.now))
        wait_held(srv)
        assert not held.done()
        srv.ok(bob, "answerOffer", {"offerId": offer, "sdp": "answer"})
        result = ok(held.result(BACK))
    assert [(a["offerId"], a["answererId"], a["sdp"]) for a in result["answers"]] == [
        (offer, bob.username, "answer")
    ]
    assert result["iceCandidates"] == {}
    wait_held(srv, 0)


def test_a_poll_is_held_until_a_candidate_of_the_answerer(srv: RunningServer) -> None:
    alice, bob, offer = offer_pair(srv)
    answered_at = srv.ok(alice, "poll", {})["answers"][0]["answeredAt"]
    with sender(srv) as send:
        held = send(alice.call("poll", {"since": answered_at, "waitMs": LONG}, now=srv.clock.now))
        wait_held(srv)
        srv.clock.advance(5)
        srv.ok(bob, "addIceCandidates", {"offerId": offer, "candidates": [CANDIDATE]})
        result = ok(held.result(BACK))
    assert result["answers"] == []
    assert [c["candidate"] for c in result["iceCandidates"][offer]] == [CANDIDATE]


@pytest.mark.parametrize("reader", ["answerer", "owner"])
def test_get_ice_candidates_is_held_until_the_other_side_sends(
    srv: RunningServer, reader: str
) -> None:
    alice, bob, offer = offer_pair(srv)
    reading, writing = (bob, alice) if reader == "answerer" else (alice, bob)
    params = {"offerId": offer, "since": 0, "waitMs": LONG}
    with sender(srv) as send:
        held = send(reading.call("getIceCandidates", params, now=srv.clock.now))
        wait_held(srv)
        # the reader's own candidates are no news to it: still held
        srv.ok(reading, "addIceCandidates", {"offerId": offer, "candidates": [{"own": 1}]})
        assert not held.done()
        srv.ok(writing, "addIceCandidates", {"offerId": offer, "candidates": [CANDIDATE]})
        result = ok(held.result(BACK))
    assert result["offerId"] == offer
    assert [c["candidate"] for c in result["candidates"]] == [CANDIDATE]


def test_an_answer_wakes_get_ice_candidates_of_both_sides(srv: RunningServer) -> None:
    """Candidates sent before the answer become readable with it, on both sides."""
    alice, bob = Peer("a"), Peer("b")
    offer = srv.publish(alice, unique("svc"))["offers"][0]["offerId"]
    srv.ok(alice, "addIceCandidates", {"offerId": offer, "candidates": [{"from": "alice"}]})
    srv.ok(bob, "addIceCandidates", {"offerId": offer, "candidates": [{"from": "bob"}]})
    params = {"offerId": offer, "since": 0, "waitMs": LONG}
    with sender(srv) as send:
        owner = send(alice.call("getIceCandidates", params, now=srv.clock.now))
        answerer = send(bob.call("getIceCandidates", params, now=srv.clock.now))
        wait_held(srv, 2)
        srv.ok(bob, "answerOffer", {"offerId": offer, "sdp": "answer"})
        assert [c["candidate"] for c in ok(owner.result(BACK))["candidates"]] == [{"from": "bob"}]
        got = ok(answerer.result(BACK))["candidates"]
        assert [c["candidate"] for c in got] == [{"from": "alice"}]


@pytest.mark.parametrize("change", ["publishService", "deleteService"])
def test_a_change_to_the_owners_services_ends_its_held_poll_empty(
    srv: RunningServer, change: str
) -> None:
    """Another process of the same user replaced or withdrew the offers: the held poll
    is answered at once, empty, so its client looks at its service."""
    alice = Peer("a")
    service = unique("svc")
    srv.publish(alice, service)
    with sender(srv) as send:
        held = send(alice.call("poll", {"since": 0, "waitMs": LONG}, now=srv.clock.now))
        wait_held(srv)
        assert not held.done()
        if change == "publishService":
            srv.publish(alice, service)  # same name, same key: replaces the offers
        else:
            srv.ok(alice, "deleteService", {"serviceFqn": f"{service}:1.0.0@{alice.username}"})
        assert ok(held.result(BACK)) == EMPTY_POLL
    wait_held(srv, 0)


def test_an_end_key_ends_only_the_calls_held_on_its_key() -> None:
    async def scenario() -> None:
        registry = WaitRegistry(max_waiting=10, max_waiting_per_user=10)
        alice, bob = Signal(), Signal()
        alices = registry.register(poll_key("alice"), "alice", alice)
        bobs = registry.register(poll_key("bob"), "bob", bob)
        assert alices is not None
        assert bobs is not None
        registry.wake([end_key(poll_key("bob"))])
        assert (alices.woken, alices.ended) == (False, False)
        assert (bobs.woken, bobs.ended) == (True, True)
        registry.wake([poll_key("alice")])  # an ordinary wake: read again, no end
        assert (alices.woken, alices.ended) == (True, False)

    asyncio.run(scenario())


def test_since_is_respected_while_held(srv: RunningServer) -> None:
    """A held poll whose cursor is at the latest answer is not answered by that answer."""
    alice, bob = Peer("a"), Peer("b")
    offers = srv.publish(alice, unique("svc"), count=2)["offers"]
    srv.ok(bob, "answerOffer", {"offerId": offers[0]["offerId"], "sdp": "first"})
    latest = srv.ok(alice, "poll", {})["answers"][0]["answeredAt"]
    with sender(srv) as send:
        held = send(alice.call("poll", {"since": latest, "waitMs": LONG}, now=srv.clock.now))
        wait_held(srv)
        srv.ok(bob, "addIceCandidates", {"offerId": offers[0]["offerId"], "candidates": [{}]})
        srv.clock.advance(10)
        carol = Peer("c")
        srv.ok(carol, "answerOffer", {"offerId": offers[1]["offerId"], "sdp": "second"})
        result = ok(held.result(BACK))
    # the candidate was stamped at `latest` (not after it): only the second answer is new
    assert [a["sdp"] for a in result["answers"]] == ["second"]
    assert result["iceCandidates"] == {}


def test_news_already_there_answers_at_once(srv: RunningServer) -> None:
    alice, _, offer = offer_pair(srv)
    result = srv.ok(alice, "poll", {"since": 0, "waitMs": LONG})
    assert [a["offerId"] for a in result["answers"]] == [offer]
    assert srv.server.waits.waiting == 0


# -- the wait ends -------------------------------------------------------------------


def test_a_held_call_ends_with_its_wait(srv: RunningServer) -> None:
    alice, bob, offer = offer_pair(srv)
    assert srv.ok(alice, "poll", {"since": srv.clock.now, "waitMs": 200}) == EMPTY_POLL
    params = {"offerId": offer, "since": 0, "waitMs": 200}
    assert srv.ok(bob, "getIceCandidates", params) == {"candidates": [], "offerId": offer}
    assert srv.server.waits.waiting == 0


def test_a_longer_wait_is_held_for_the_servers_longest() -> None:
    with running_server("sqlite", long_poll_max_wait_ms=200) as srv:
        alice = Peer("a")
        assert srv.ok(alice, "poll", {"waitMs": 10**15}) == EMPTY_POLL
        assert srv.http.get("/").json()["extensions"]["longPoll"] == {"maxWaitMs": 200}


def test_shutdown_answers_held_calls_at_once() -> None:
    alice = Peer("a")
    with running_server("sqlite") as srv, sender(srv) as send:
        held = [send(alice.call("poll", {"waitMs": 25_000}, now=srv.clock.now)) for _ in range(3)]
        wait_held(srv, 3)
        srv.run(_release(srv))
        assert [ok(call.result(BACK)) for call in held] == [EMPTY_POLL] * 3
        # and nothing more is held: a new call with waitMs answers at once
        assert srv.ok(alice, "poll", {"waitMs": 25_000}) == EMPTY_POLL


async def _release(srv: RunningServer) -> None:
    srv.server.release_waiters()


def test_leaving_the_server_answers_held_calls() -> None:
    """The test harness stops the server as `rondevu serve` does: held calls first."""
    alice = Peer("a")
    with sender_pool() as pool:
        with running_server("sqlite") as srv:
            http = httpx.Client(base_url=srv.url, timeout=60)
            body = alice.call("poll", {"waitMs": 25_000}, now=srv.clock.now)
            held = pool.submit(lambda: http.post("/rpc", json=body).json())
            wait_held(srv)
        assert ok(held.result(BACK)) == EMPTY_POLL
        http.close()


@contextmanager
def sender_pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        yield pool


def test_a_client_that_leaves_frees_its_held_call() -> None:
    """Nobody to answer: the call stops waiting (and counting against the bounds)."""
    with running_server("sqlite", long_poll_max_waiting_per_user=1) as srv:
        alice = Peer("a")
        body = json.dumps(alice.call("poll", {"waitMs": LONG}, now=srv.clock.now)).encode()
        port = int(srv.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /rpc HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            wait_held(srv)
        wait_held(srv, 0)
        # the one place alice may hold is free again
        with sender(srv) as send:
            held = send(alice.call("poll", {"waitMs": LONG}, now=srv.clock.now))
            wait_held(srv)
            srv.run(_release(srv))
            assert ok(held.result(BACK)) == EMPTY_POLL


# -- bounds ----------------------------------------------------------------------------


def test_past_the_bound_per_user_a_call_answers_at_once() -> None:
    with running_server("sqlite", long_poll_max_waiting_per_user=2) as srv, sender(srv) as send:
        alice, bob = Peer("a"), Peer("b")
        held = [send(alice.call("poll", {"waitMs": LONG}, now=srv.clock.now)) for _ in range(2)]
        wait_held(srv, 2)
        # alice's third wait is refused: answered at once, as a 0.5.4 server would
        assert srv.ok(alice, "poll", {"waitMs": LONG}) == EMPTY_POLL
        # bob still may wait
        bobs = send(bob.call("poll", {"waitMs": 200}, now=srv.clock.now))
        assert ok(bobs.result(BACK)) == EMPTY_POLL
        srv.run(_release(srv))
        assert [ok(call.result(BACK)) for call in held] == [EMPTY_POLL] * 2


def test_past_the_bound_in_total_a_call_answers_at_once() -> None:
    with running_server("sqlite", long_poll_max_waiting=2) as srv, sender(srv) as send:
        held = [send(Peer("a").call("poll", {"waitMs": LONG}, now=srv.clock.now)) for _ in "ab"]
        wait_held(srv, 2)
        assert srv.ok(Peer("c"), "poll", {"waitMs": LONG}) == EMPTY_POLL
        srv.run(_release(srv))
        assert [ok(call.result(BACK)) for call in held] == [EMPTY_POLL] * 2


def test_a_held_call_counts_once_against_the_rate_limit() -> None:
    """Charged when it arrives, like any call; its wait and re-reads cost nothing more,
    and its answer is never refused."""
    with (
        running_server(
            "sqlite", rate_limit_loopback=True, rate_limit_per_second=0.001, rate_limit_burst=2
        ) as srv,
        sender(srv) as send,
    ):
        alice = Peer("a")
        held = send(alice.call("poll", {"waitMs": LONG}, now=srv.clock.now))  # 1
        wait_held(srv)
        assert srv.ok(alice, "poll", {}) == EMPTY_POLL  # 2
        assert srv.post(alice.call("poll", {}, now=srv.clock.now)).status_code == 429

        async def wake_and_release() -> None:
            srv.server.waits.wake([poll_key(alice.username)])  # a re-read, still empty
            await asyncio.sleep(0)
            srv.server.release_waiters()

        srv.run(wake_and_release())
        assert ok(held.result(BACK)) == EMPTY_POLL


# -- parameters ------------------------------------------------------------------------


@pytest.mark.parametrize("wait", [None, 0])
def test_without_a_wait_nothing_changes(srv: RunningServer, wait: int | None) -> None:
    """Absent (or 0, or null): answered at once, byte for byte as without the param."""
    alice, bob, offer = offer_pair(srv)
    extra = {} if wait is None else {"waitMs": wait}
    since = {"since": srv.clock.now}
    plain = srv.post(alice.call("poll", since, now=srv.clock.now)).content
    assert plain == b'{"success":true,"result":{"answers":[],"iceCandidates":{}}}'
    for params in ({**since, **extra}, {**since, "waitMs": None}):
        assert srv.post(alice.call("poll", params, now=srv.clock.now)).content == plain
    ice = {"offerId": offer, "since": 0}
    plain = srv.post(bob.call("getIceCandidates", ice, now=srv.clock.now)).content
    waiting = bob.call("getIceCandidates", {**ice, **extra}, now=srv.clock.now)
    assert srv.post(waiting).content == plain
    assert srv.server.waits.waiting == 0


@pytest.mark.parametrize("value", ["200", -1, 1.5, True, [], {}])
def test_an_invalid_wait_is_a_clear_error(value: Any) -> None:
    with running_server("sqlite") as srv:
        alice, bob, offer = offer_pair(srv)
        expected = (
            "Invalid waitMs: must be a whole number of milliseconds, 0 or more (held at most 25000)"
        )
        assert srv.error(alice, "poll", {"waitMs": value}) == expected
        params = {"offerId": offer, "waitMs": value}
        assert srv.error(bob, "getIceCandidates", params) == expected
        # the original's own checks come first
        bad = {"offerId": "nope", "waitMs": value}
        assert srv.error(bob, "getIceCandidates", bad) == "Offer not found"


def test_a_whole_float_is_a_wait() -> None:
    with running_server("sqlite") as srv:
        body = Peer("a").call("poll", {"waitMs": 200.0}, now=srv.clock.now)
        assert ok(srv.post(body).json()) == EMPTY_POLL


def test_switched_off_the_server_is_the_original() -> None:
    """long_poll_max_wait_ms=0 (and the state view off): waitMs is ignored (even
    invalid) and GET / is 0.5.4's."""
    with running_server("sqlite", long_poll_max_wait_ms=0, public_state=False) as srv:
        assert srv.http.get("/").content == (
            b'{"version":"unknown","name":"Rondevu","description":'
            b'"WebRTC signaling with RPC interface and Ed25519 authentication"}'
        )
        alice = Peer("a")
        assert srv.ok(alice, "poll", {"waitMs": LONG}) == EMPTY_POLL
        assert srv.ok(alice, "poll", {"waitMs": "soon"}) == EMPTY_POLL


def test_get_root_lists_the_extension(srv: RunningServer) -> None:
    info = srv.http.get("/").json()
    assert list(info) == ["version", "name", "description", "extensions"]
    assert info["extensions"]["longPoll"] == {"maxWaitMs": 25_000}
    model = ServerInfo.from_wire(info)
    assert model.extensions is not None
    assert model.extensions.long_poll == LongPollExtension(max_wait_ms=25_000)


# -- batches ---------------------------------------------------------------------------


def test_a_batch_is_held_after_its_other_calls_ran(srv: RunningServer) -> None:
    """The other calls run at their turn, before the hold; replies in request order."""
    alice, bob, dave = Peer("a"), Peer("b"), Peer("d")
    offer = srv.publish(alice, unique("svc"))["offers"][0]["offerId"]
    now = srv.clock.now
    batch = [
        alice.call("poll", {"waitMs": LONG}, now=now),
        bob.call("getUser", {"username": dave.username}, now=now),
    ]
    with sender(srv) as send:
        held = send(batch)
        wait_held(srv)
        srv.ok(dave, "poll", {})  # claims the name - after getUser ran
        srv.ok(bob, "answerOffer", {"offerId": offer, "sdp": "answer"})
        polled, user = held.result(BACK)
    assert [a["offerId"] for a in ok(polled)["answers"]] == [offer]
    assert ok(user) == {"username": dave.username, "available": True}


def test_a_write_later_in_the_batch_answers_it_at_once(srv: RunningServer) -> None:
    alice, bob = Peer("a"), Peer("b")
    offer = srv.publish(alice, unique("svc"))["offers"][0]["offerId"]
    now = srv.clock.now
    batch = [
        alice.call("poll", {"waitMs": LONG}, now=now),
        bob.call("answerOffer", {"offerId": offer, "sdp": "answer"}, now=now),
    ]
    polled, answered = srv.post(batch).json()
    assert [a["offerId"] for a in ok(polled)["answers"]] == [offer]
    assert ok(answered) == {"success": True, "offerId": offer}


def test_a_batch_answers_when_its_first_waiting_call_has_news(srv: RunningServer) -> None:
    alice, bob, offer = offer_pair(srv)
    now = srv.clock.now
    batch = [
        alice.call("poll", {"since": now, "waitMs": LONG}, now=now),
        bob.call("getIceCandidates", {"offerId": offer, "waitMs": LONG}, now=now),
    ]
    with sender(srv) as send:
        held = send(batch)
        wait_held(srv, 2)
        srv.ok(alice, "addIceCandidates", {"offerId": offer, "candidates": [CANDIDATE]})
        polled, ice = held.result(BACK)
    assert ok(polled) == EMPTY_POLL
    assert [c["candidate"] for c in ok(ice)["candidates"]] == [CANDIDATE]
    wait_held(srv, 0)


def test_a_batch_answers_when_its_shortest_wait_ends(srv: RunningServer) -> None:
    alice, bob, offer = offer_pair(srv)
    now = srv.clock.now
    batch = [
        alice.call("poll", {"since": now, "waitMs": LONG}, now=now),
        bob.call("getIceCandidates", {"offerId": offer, "waitMs": 200}, now=now),
        bob.call("poll", {}, now=now),
    ]
    polled, ice, plain = srv.post(batch).json()
    assert ok(polled) == EMPTY_POLL
    assert ok(ice) == {"candidates": [], "offerId": offer}
    assert ok(plain) == EMPTY_POLL
    assert srv.server.waits.waiting == 0


def test_a_failing_call_in_a_batch_is_not_held(srv: RunningServer) -> None:
    alice = Peer("a")
    now = srv.clock.now
    batch = [
        alice.call("getIceCandidates", {"offerId": "0" * 64, "waitMs": LONG}, now=now),
        alice.call("poll", {"waitMs": -5}, now=now),
    ]
    missing, invalid = srv.post(batch).json()
    assert missing == {"success": False, "error": "Offer not found"}
    assert invalid["success"] is False
    assert invalid["error"].startswith("Invalid waitMs")
