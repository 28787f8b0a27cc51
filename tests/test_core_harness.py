"""End to end through the in-memory harness: an offer pool and an answerer connection,
the fake signaling server and the fake WebRTC network, on a fake clock (no sleeps).

Covers both ICE styles (aiortc: candidates in the SDP; browser: trickled), both server
timestamp rules (ours and upstream 0.5.4), drops seen the aiortc way (``closed`` after
30 s) and the browser way (ICE ``disconnected`` then ``failed``), reconnection to the
same user with a fresh offer, buffering across the outage, and the closing invariants;
and the pool's refill while a handshake is pending: at once with our server, which keeps
answered offers on republish, and only once it settles with upstream's (B7, B8, B11).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from rondevu_core.actions import CreateDataChannel, SendData, SendRpc
from rondevu_core.config import ConnectionConfig, DataChannelOptions, PoolConfig
from rondevu_core.connection import EDGES, Connection, State
from rondevu_core.events import (
    ALL_EVENTS,
    ConnectionOpened,
    Failed,
    IceCandidateLocal,
    Message,
    MessageReplayed,
    OfferFetched,
    StateChanged,
)
from rondevu_core.inputs import Close, Connect, SendMessage, StartFilling, StopFilling
from rondevu_core.pool import OfferPool
from rondevu_core.rpc import Method
from rondevu_core.rules.fqn import ServiceFqn, parse_service_fqn
from tests.fakes.network import Endpoint, Sim


def fqn(text: str) -> ServiceFqn:
    parsed = parse_service_fqn(text)
    assert parsed is not None
    return parsed


SERVICE = fqn("chat:1.0.0@alice")


def setup(
    *,
    trickle: bool = False,
    server_mode: str = "ours",
    max_offers: int = 1,
    config: ConnectionConfig | None = None,
    service: str = "chat:1.0.0@alice",
) -> tuple[Sim, Endpoint, Endpoint, OfferPool, Connection]:
    sim = Sim(trickle=trickle, server_mode=server_mode)
    rng = random.Random(7)
    conn_config = config or ConnectionConfig(strict_ice_timestamps=server_mode == "ours")
    pool = OfferPool(
        PoolConfig(service=SERVICE, max_offers=max_offers, connection=conn_config),
        unit_random=rng.random,
    )
    alice = sim.add("alice", "alice", pool)
    bob_conn = Connection.answerer(fqn(service), config=conn_config, unit_random=rng.random)
    bob = sim.add("bob", "bob", bob_conn)
    alice.feed(StartFilling(now=sim.now))
    assert sim.run_until(lambda: bool(sim.server.offers), limit_ms=5000)
    return sim, alice, bob, pool, bob_conn


def answerer_rpc_budget(config: ConnectionConfig, *, local_candidates: int) -> int:
    """The most RPCs one answerer attempt may make, from the protocol (the 0.18.9
    answerer with B1, B6 and B12 fixed): one getService, one answerOffer, single-flight
    getIceCandidates at most one per polling interval until the polling timeout, and
    addIceCandidates uploads, each of which carries a candidate not sent before, or
    retries on a poll tick, or is the one flush when uploads are enabled."""
    polls = config.ice_polling_timeout_ms // config.ice_polling_interval_ms + 1
    uploads = local_candidates + polls + 1
    return 2 + polls + uploads


def trickled(endpoint: Endpoint) -> int:
    """How many local candidates the endpoint's peer connections trickled."""
    return sum(1 for e in endpoint.events if isinstance(e, IceCandidateLocal) and e.candidate)


def connected_pool_conn(pool: OfferPool) -> Connection:
    up = [c for c in pool.connections.values() if c.state is State.CONNECTED]
    assert len(up) == 1
    return up[0]


def is_up(conn: Connection) -> Callable[[], bool]:
    return lambda: conn.state is State.CONNECTED


def is_down(conn: Connection) -> Callable[[], bool]:
    return lambda: conn.state is not State.CONNECTED


def check_edges(endpoint: Endpoint) -> None:
    for event in endpoint.events:
        if isinstance(event, StateChanged):
            assert (State(event.old), State(event.new)) in EDGES, event


@pytest.mark.parametrize("trickle", [False, True], ids=["aiortc", "browser"])
@pytest.mark.parametrize("server_mode", ["ours", "upstream"])
def test_connects_and_exchanges_messages(trickle: bool, server_mode: str) -> None:
    sim, alice, bob, pool, bob_conn = setup(trickle=trickle, server_mode=server_mode)
    started_at = sim.now
    bob.feed(Connect(now=sim.now))
    bob.feed(SendMessage(now=sim.now, data="sent early"))
    assert sim.run_until(lambda: bob_conn.state is State.CONNECTED, limit_ms=10_000)
    connected_at = sim.now
    assert sim.run_until(lambda: any(isinstance(e, Message) for e in alice.events), limit_ms=1000)
    # The early message was buffered, then replayed once.
    assert [e.data for e in alice.events if isinstance(e, Message)] == ["sent early"]
    assert [e.data for e in bob.events if isinstance(e, MessageReplayed)] == ["sent early"]
    offerer = connected_pool_conn(pool)
    assert any(isinstance(e, ConnectionOpened) for e in alice.events)
    # Both directions now flow directly.
    alice.feed(SendMessage(now=sim.now, data=b"hi bob", connection_id=offerer.connection_id))
    assert sim.run_until(
        lambda: any(isinstance(e, Message) and e.data == b"hi bob" for e in bob.events),
        limit_ms=1000,
    )
    # Polling stopped once connected (B12): no more getIceCandidates after a while.
    before = bob.rpcs(Method.GET_ICE_CANDIDATES)
    sim.run_for(5000)
    assert bob.rpcs(Method.GET_ICE_CANDIDATES) == before
    # RPCs of this established connection: one of each handshake call, polls only until
    # connected (at most one per interval over the time it took), one upload per batch
    # of trickled candidates at most, and all of it within the protocol's budget.
    config = bob_conn.config
    assert bob.rpcs(Method.GET_SERVICE) == 1
    assert bob.rpcs(Method.ANSWER_OFFER) == 1
    assert 1 <= before <= (connected_at - started_at) // config.ice_polling_interval_ms + 1
    uploads = bob.rpcs(Method.ADD_ICE_CANDIDATES)
    assert uploads <= trickled(bob)
    if not trickle:
        assert uploads == 0  # aiortc: every candidate travelled in the answer's SDP
    assert bob.rpc_count <= answerer_rpc_budget(config, local_candidates=trickled(bob))
    check_edges(bob)


def test_pool_refills_after_a_connection_and_never_exceeds_max_offers() -> None:
    sim, _, bob, pool, bob_conn = setup(max_offers=2)
    assert len(sim.server.offers) == 2
    bob.feed(Connect(now=sim.now))
    assert sim.run_until(lambda: bob_conn.state is State.CONNECTED, limit_ms=10_000)
    sim.run_for(3000)
    unanswered = [o for o in sim.server.offers if o.answerer is None]
    assert len(unanswered) == 2  # refilled (B11), published together (B8)
    assert len(pool.unanswered()) == 2
    # The connected offerer survived the republish.
    assert connected_pool_conn(pool).state is State.CONNECTED


def unanswered_on_server(sim: Sim) -> set[str]:
    """Ids of the live, unanswered offers the fake server would hand out."""
    return {o.id for o in sim.server.offers if o.answerer is None and o.expires_at > sim.wall()}


def publishes(sim: Sim) -> int:
    return sum(1 for c in sim.server.calls if c.request.method is Method.PUBLISH_SERVICE)


def answered_conn(pool: OfferPool) -> Connection:
    found = [c for c in pool.connections.values() if c.answer_applied]
    assert len(found) == 1
    return found[0]


def test_with_our_server_the_pool_stays_full_while_a_handshake_is_pending() -> None:
    """B7/B11 with B8 kept: our server keeps answered offers on republish and says so, so
    the pool refills at once; the pending handshake survives the republish."""
    sim, _, bob, pool, bob_conn = setup(trickle=True, max_offers=3)
    assert sim.run_until(lambda: pool.server_keeps_answered_offers, limit_ms=1000)
    bob.feed(Connect(now=sim.now))
    # Browser-style ICE: the pool's side needs bob's candidates from the server, so the
    # handshake cannot complete if a republish deleted its offer or their candidates.
    assert sim.run_until(lambda: pool.pending_handshakes() == 1, limit_ms=10_000)
    conn = answered_conn(pool)
    answered = conn.offer_id
    assert answered is not None
    before = publishes(sim)

    def refilled() -> bool:  # the publish of the replacement offer has settled
        if conn.state is State.CONNECTED:
            return True  # too late: the assertion below says so
        offers = pool.unanswered()
        return len(offers) == 3 and all(c.offer_id for c in offers)

    assert sim.run_until(refilled, limit_ms=10_000)
    assert pool.pending_handshakes() == 1, "the refill waited for the handshake"
    assert publishes(sim) == before + 1
    assert unanswered_on_server(sim) == {c.offer_id for c in pool.unanswered()}
    kept = sim.server.offer(answered)
    assert kept is not None
    assert kept.answerer == "bob"
    # The handshake still completes, over the kept offer and candidates.
    assert sim.run_until(is_up(bob_conn), limit_ms=10_000)
    assert sim.run_until(is_up(conn), limit_ms=10_000)
    assert [c.offer_id for c in pool.connections.values() if c.state is State.CONNECTED] == [
        answered
    ]
    assert len(unanswered_on_server(sim)) == 3
    check_edges(bob)


def test_with_upstream_no_republish_while_a_handshake_is_pending() -> None:
    """0.5.4 would delete the answered offer: the pool waits, one offer short, and the
    handshake's offer is never deleted under it."""
    sim, _, bob, pool, bob_conn = setup(trickle=True, max_offers=3, server_mode="upstream")
    assert sim.run_until(lambda: all(c.offer_id for c in pool.unanswered()), limit_ms=1000)
    assert not pool.server_keeps_answered_offers
    bob.feed(Connect(now=sim.now))
    assert sim.run_until(lambda: pool.pending_handshakes() == 1, limit_ms=10_000)
    conn = answered_conn(pool)
    answered = conn.offer_id
    assert answered is not None
    before = publishes(sim)
    pending_steps = 0

    def connected_and_checked() -> bool:
        nonlocal pending_steps
        if pool.pending_handshakes():
            pending_steps += 1
            assert publishes(sim) == before, "republished while a handshake was pending"
            kept = sim.server.offer(answered)
            assert kept is not None
            assert kept.answerer == "bob"
            assert len(unanswered_on_server(sim)) == 2  # max_offers - 1, as before
        return conn.state is State.CONNECTED

    assert sim.run_until(connected_and_checked, limit_ms=10_000)
    assert pending_steps > 1  # the handshake took some steps: the checks ran
    assert sim.run_until(is_up(bob_conn), limit_ms=10_000)
    # Refilled once the handshake settled.
    assert sim.run_until(lambda: len(unanswered_on_server(sim)) == 3, limit_ms=5000)
    assert publishes(sim) == before + 1


@pytest.mark.parametrize("browser", [False, True], ids=["aiortc-closed", "browser-ice"])
def test_drop_then_reconnect_to_same_user_with_buffer_replay(browser: bool) -> None:
    sim, alice, bob, pool, bob_conn = setup(trickle=browser)
    bob.feed(Connect(now=sim.now))
    assert sim.run_until(lambda: bob_conn.state is State.CONNECTED, limit_ms=10_000)
    sim.network.sever(sim.network.live_pc(bob), browser=browser)
    assert sim.run_until(lambda: bob_conn.state is not State.CONNECTED, limit_ms=60_000)
    bob.feed(SendMessage(now=sim.now, data="during outage"))
    assert sim.run_until(
        lambda: bob_conn.state is State.CONNECTED and len(pool.connections) >= 1,
        limit_ms=120_000,
    )
    names = bob.names()
    assert "disconnected" in names
    assert "reconnect:scheduled" in names
    assert "reconnect:attempting" in names
    assert "reconnect:success" in names or "connected" in names
    assert sim.run_until(
        lambda: any(isinstance(e, Message) and e.data == "during outage" for e in alice.events),
        limit_ms=5000,
    )
    # Reconnection asked the same user for a fresh offer (B13).
    fetches = [
        a for a in bob.actions if isinstance(a, SendRpc) and a.request.method is Method.GET_SERVICE
    ]
    assert len(fetches) >= 2
    assert all(a.request.params["serviceFqn"] == "chat:1.0.0@alice" for a in fetches)
    check_edges(bob)


def test_discovery_pins_the_publisher_for_reconnection() -> None:
    sim, _, bob, _, bob_conn = setup(service="chat:1.0.0")
    bob.feed(Connect(now=sim.now))
    assert sim.run_until(lambda: bob_conn.state is State.CONNECTED, limit_ms=10_000)
    assert str(bob_conn.service) == "chat:1.0.0@alice"
    # The application learns the publisher from an event, not from the machine.
    [fetched] = [e for e in bob.events if isinstance(e, OfferFetched)]
    assert fetched.username == "alice"
    assert fetched.offer_id == bob_conn.offer_id


def test_close_stops_everything() -> None:
    sim, alice, bob, pool, bob_conn = setup()
    bob.feed(Connect(now=sim.now))
    assert sim.run_until(lambda: bob_conn.state is State.CONNECTED, limit_ms=10_000)
    bob.feed(Close(now=sim.now))
    assert bob_conn.state is State.CLOSED
    assert bob_conn.get_timer() is None
    assert bob.names()[-1] == "closed"
    n_actions = len(bob.actions)
    sim.run_for(60_000)  # late replies and reports are absorbed without any action
    assert len(bob.actions) == n_actions
    # The offerer saw the channel close and was replaced by a fresh offer (B14).
    assert sim.run_until(lambda: len(pool.unanswered()) == 1, limit_ms=5000)
    alice.feed(StopFilling(now=sim.now))
    assert not pool.connections
    alice.feed(Close(now=sim.now))
    assert pool.get_timer() is None


def test_no_offer_available_fails_then_exhausts() -> None:
    config = ConnectionConfig(max_reconnect_attempts=2, connection_timeout_ms=5000)
    sim, _, bob, _, bob_conn = setup(config=config, service="chat:9.9.9@alice")
    bob.feed(Connect(now=sim.now))
    assert sim.run_until(lambda: bob_conn.terminal, limit_ms=120_000)
    names = bob.names()
    assert names.count("reconnect:failed") == 2
    assert "reconnect:exhausted" in names
    assert bob_conn.state is State.FAILED
    assert bob_conn.get_timer() is None
    assert not [a for a in bob.actions if isinstance(a, SendData)]
    # Each `failed` says whether a reconnection follows: only the last one is final.
    finals = [e.final for e in bob.events if isinstance(e, Failed)]
    assert finals == [False, False, True]


def test_an_offerers_failure_is_final() -> None:
    """Without the session layer the pool replaces a failed offerer connection; that
    connection itself is done (with it, it waits to resume: tests/test_core_layer.py)."""
    sim, alice, bob, _, bob_conn = setup(config=ConnectionConfig(session=None))
    bob.feed(Connect(now=sim.now))
    assert sim.run_until(lambda: bob_conn.state is State.CONNECTED, limit_ms=10_000)
    bob.feed(Close(now=sim.now))
    assert sim.run_until(lambda: any(isinstance(e, Failed) for e in alice.events), limit_ms=60_000)
    assert all(e.final for e in alice.events if isinstance(e, Failed))


def test_every_documented_event_is_emitted_somewhere() -> None:
    """B16: each event class appears in at least one of these harness scenarios."""
    seen: set[str] = set()
    for browser in (False, True):
        sim, alice, bob, _, bob_conn = setup(
            trickle=browser,
            # The plain path: with the session layer nothing expires by age.
            config=ConnectionConfig(max_buffer_size=1, max_buffer_age_ms=1500, session=None),
            max_offers=2,
        )
        bob.feed(Connect(now=sim.now))
        bob.feed(SendMessage(now=sim.now, data="a"))
        bob.feed(SendMessage(now=sim.now, data="b"))  # overflow: "a" is evicted
        assert sim.run_until(is_up(bob_conn), limit_ms=10_000)
        sim.network.sever(sim.network.live_pc(bob), browser=browser)
        assert sim.run_until(is_down(bob_conn), limit_ms=60_000)
        bob.feed(SendMessage(now=sim.now, data="old"))
        sim.run_for(1600)  # "old" expires: backoff + handshake take about 2 s
        assert sim.run_until(is_up(bob_conn), limit_ms=120_000)
        bob.feed(Close(now=sim.now))
        sim.run_for(1000)
        for e in (*alice.events, *bob.events):
            seen.add(e.name)
    expected = {cls.name for cls in ALL_EVENTS}
    # Events that need a misbehaving peer/server, a failing publish, a gathering stall or
    # a second answer are provoked by name in test_core_events.py and test_core_ice_exchange.py.
    elsewhere = {
        "protocol:error",
        "signaling:error",
        "offers:publish:failed",
        "answer:duplicate",
        "datachannel:error",
        "ice:candidate:rejected",
        "ice:gathering:timeout",
        "reconnect:failed",
        "reconnect:exhausted",
        "connection:timeout",
        # Provoked in test_core_recovery.py: a permanent server error, offers gone.
        "error:permanent",
        "service:republished",
        # The session layer's, in tests/test_core_layer.py.
        "session:reset",
        "message:acked",
        "message:undelivered",
    }
    assert expected - elsewhere <= seen, sorted(expected - elsewhere - seen)


def test_data_channel_options_travel_on_the_action() -> None:
    """The driver creates the channel the configuration describes; it decides nothing."""
    options = DataChannelOptions(ordered=False, max_retransmits=0, protocol="chat")
    _, alice, _, _, _ = setup(config=ConnectionConfig(data_channel=options))
    created = [a for a in alice.actions if isinstance(a, CreateDataChannel)]
    assert created
    assert {a.options for a in created} == {options}
