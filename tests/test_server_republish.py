"""B8 on our server: a republish replaces only the service's unanswered offers.

An offer pool republishes its whole service; an answer that lands between the pool's
last poll and its republish must survive it, with its candidates, on both backends.
"""

from __future__ import annotations

import pytest

from rondevu_core.rules.offer_id import offer_id_for_sdp
from tests.rondevu_server_testing import BACKENDS, Peer, running_server, sdp, unique

CANDIDATE = {"candidate": "candidate:1 1 udp 1 10.0.0.1 5000 typ host", "sdpMid": "0"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_answered_offers_survive_a_republish(backend: str) -> None:
    with running_server(backend) as srv:
        alice, bob = Peer("a"), Peer("b")
        fqn = f"{unique('pool')}:1.0.0@{alice.username}"
        sdp_a, sdp_b, sdp_c = sdp(), sdp(), sdp()
        id_a, id_b, id_c = (offer_id_for_sdp(x) for x in (sdp_a, sdp_b, sdp_c))
        first = srv.ok(
            alice,
            "publishService",
            {"serviceFqn": fqn, "offers": [{"sdp": sdp_a}, {"sdp": sdp_b}], "ttl": 120_000},
        )
        answer_sdp = sdp()
        srv.ok(bob, "answerOffer", {"offerId": id_a, "sdp": answer_sdp})
        srv.ok(bob, "addIceCandidates", {"offerId": id_a, "candidates": [CANDIDATE]})
        srv.ok(alice, "addIceCandidates", {"offerId": id_a, "candidates": [CANDIDATE]})
        srv.clock.advance(1000)

        # The pool did not see the answer yet: it republishes A (same SDP) with a new C.
        again = srv.ok(
            alice,
            "publishService",
            {"serviceFqn": fqn, "offers": [{"sdp": sdp_a}, {"sdp": sdp_c}], "ttl": 60_000},
        )
        assert again["serviceId"] == first["serviceId"]  # the row stays with its offer
        assert [o["offerId"] for o in again["offers"]] == [id_a, id_c]
        assert again["offers"][0] == first["offers"][0]  # reported as stored
        assert again["offers"][1]["createdAt"] == srv.clock.now
        assert again["expiresAt"] >= first["offers"][0]["expiresAt"]

        answer = srv.ok(alice, "getOfferAnswer", {"offerId": id_a})
        assert (answer["sdp"], answer["answererId"]) == (answer_sdp, bob.username)
        assert [a["offerId"] for a in srv.ok(alice, "poll", {"since": 0})["answers"]] == [id_a]
        for reader in (alice, bob):
            got = srv.ok(reader, "getIceCandidates", {"offerId": id_a, "since": 0})
            assert [c["candidate"] for c in got["candidates"]] == [CANDIDATE]
        # The unanswered B was replaced; C is what discovery hands out now.
        assert srv.error(alice, "getOfferAnswer", {"offerId": id_b}) == "Offer not found"
        found = srv.ok(bob, "getService", {"serviceFqn": fqn})
        assert (found["offerId"], found["serviceId"]) == (id_c, first["serviceId"])

        # Answered offers still expire, with their own expiry, and cleanup removes them.
        srv.clock.advance(first["offers"][0]["expiresAt"] - srv.clock.now)
        assert srv.error(alice, "getOfferAnswer", {"offerId": id_a}) == "Offer not found"
        srv.run(srv.server.cleanup_once())
        assert srv.error(bob, "getIceCandidates", {"offerId": id_a}) == "Offer not found"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_republish_with_nothing_answered_replaces_the_service(backend: str) -> None:
    with running_server(backend) as srv:
        alice = Peer("a")
        fqn = f"{unique('pool')}:1.0.0@{alice.username}"
        first = srv.ok(alice, "publishService", {"serviceFqn": fqn, "offers": [{"sdp": sdp()}]})
        again = srv.ok(alice, "publishService", {"serviceFqn": fqn, "offers": [{"sdp": sdp()}]})
        assert again["serviceId"] != first["serviceId"]  # a fresh row, as in the original
        old = first["offers"][0]["offerId"]
        assert srv.error(alice, "getOfferAnswer", {"offerId": old}) == "Offer not found"


@pytest.mark.parametrize("backend", BACKENDS)
def test_kept_offers_count_toward_the_per_user_bound(backend: str) -> None:
    with running_server(backend, max_offers_per_user=3) as srv:
        alice, bob = Peer("a"), Peer("b")
        fqn = f"{unique('pool')}:1.0.0@{alice.username}"
        offers = [{"sdp": sdp()} for _ in range(3)]
        published = srv.ok(alice, "publishService", {"serviceFqn": fqn, "offers": offers})
        kept = published["offers"][0]["offerId"]
        srv.ok(bob, "answerOffer", {"offerId": kept, "sdp": sdp()})
        three = {"serviceFqn": fqn, "offers": [{"sdp": sdp()} for _ in range(3)]}
        refused = srv.error(alice, "publishService", three)
        assert refused == "Too many offers for this username (max 3)"
        # Refused means untouched: the unanswered offers of the last publish are still there.
        found = srv.ok(bob, "getService", {"serviceFqn": fqn})
        assert found["offerId"] == published["offers"][1]["offerId"]
        two = {"serviceFqn": fqn, "offers": [{"sdp": sdp()} for _ in range(2)]}
        assert len(srv.ok(alice, "publishService", two)["offers"]) == 2
        assert srv.ok(alice, "getOfferAnswer", {"offerId": kept})["offerId"] == kept
