"""The core's two clocks: ``now`` (monotonic) for deadlines, ``unix_ms`` for server stamps.

Properties over the in-memory harness, with both clocks drawn independently: the
monotonic clock may start anywhere (a host up for a second or for years), the server's
wall clock at any plausible date, and the client's wall clock may run ahead of or behind
the server's.  Whatever the origins:

- the machines behave the same (same events, same calls) - deadlines only ever look at
  differences of ``now``;
- the pool's ``poll`` cursor and the ICE cursor move past the stamps they received when
  the client's wall clock is within the protocol's tolerance of the server's, and stay
  at 0 (de-duplication alone, still correct) when it is not - a far-off client clock never
  makes a cursor skip anything;
- the connection comes up either way.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rondevu_core.actions import SendRpc
from rondevu_core.config import ConnectionConfig, PoolConfig
from rondevu_core.connection import Connection, State
from rondevu_core.inputs import Connect, StartFilling
from rondevu_core.pool import OfferPool
from rondevu_core.rpc import Method
from rondevu_core.rules.fqn import ServiceFqn
from rondevu_core.rules.signing import TIMESTAMP_TOLERANCE_MS
from tests.fakes.network import Endpoint, Sim

SERVICE = ServiceFqn(service="chat", version="1.0.0", username="alice")

monotonic_starts = st.integers(0, 2**48)
wall_starts = st.integers(1_500_000_000_000, 2_500_000_000_000)
plausible_skews = st.integers(-TIMESTAMP_TOLERANCE_MS + 1000, 10 * TIMESTAMP_TOLERANCE_MS)
"""Client wall clocks that a server stamp cannot be ahead of by more than the tolerance."""
behind_skews = st.integers(-100 * TIMESTAMP_TOLERANCE_MS, -TIMESTAMP_TOLERANCE_MS - 60_000)
"""Client wall clocks so far behind that every stamp looks like it is from the future."""


def run(mono: int, wall: int, skew: int) -> tuple[Sim, Endpoint, Endpoint, Connection]:
    """A publisher (trickling, so candidates go through the server) and an answerer on
    our server, from the first offer to a few poll intervals after connecting."""
    sim = Sim(trickle=True, monotonic_start_ms=mono, wall_start_ms=wall, client_wall_skew_ms=skew)
    rng = random.Random(7)
    config = ConnectionConfig(strict_ice_timestamps=True)
    pool = OfferPool(PoolConfig(service=SERVICE, connection=config), unit_random=rng.random)
    alice = sim.add("alice", "alice", pool)
    conn = Connection.answerer(SERVICE, config=config, unit_random=rng.random)
    bob = sim.add("bob", "bob", conn)
    alice.feed(StartFilling(now=sim.now))
    assert sim.run_until(lambda: bool(sim.server.offers), limit_ms=5000)
    bob.feed(Connect(now=sim.now))
    assert sim.run_until(lambda: conn.state is State.CONNECTED, limit_ms=10_000)
    sim.run_for(3 * pool.config.poll_interval_ms)
    return sim, alice, bob, conn


def sinces(endpoint: Endpoint, method: Method) -> list[int]:
    return [
        int(a.request.params["since"])
        for a in endpoint.actions
        if isinstance(a, SendRpc) and a.request.method is method
    ]


def answered_at(sim: Sim) -> int:
    stamps = [o.answered_at for o in sim.server.offers if o.answered_at is not None]
    assert len(stamps) == 1
    return stamps[0]


REFERENCE = run(10_000, 1_765_700_000_000, 0)


@settings(max_examples=30, deadline=None)
@given(mono=monotonic_starts, wall=wall_starts, skew=plausible_skews)
def test_cursors_move_whatever_the_clock_origins(mono: int, wall: int, skew: int) -> None:
    sim, alice, bob, _ = run(mono, wall, skew)
    polls = sinces(alice, Method.POLL)
    assert polls[0] == 0
    # After the answer arrived, every later poll asks only for newer answers.
    assert polls[-1] == answered_at(sim) - 1
    ice = sinces(bob, Method.GET_ICE_CANDIDATES)
    created = [c.created_at for c in sim.server.candidates if c.role == "offerer"]
    assert ice[0] == 0
    # The last poll asked for candidates newer than one the answerer received (the
    # offerer may add more after the answerer stopped polling, connected).
    assert ice[-1] in created


@settings(max_examples=30, deadline=None)
@given(mono=monotonic_starts, wall=wall_starts, skew=plausible_skews | behind_skews)
def test_behaviour_does_not_depend_on_the_clock_origins(mono: int, wall: int, skew: int) -> None:
    """Same events and the same calls (cursors aside) as the reference run."""
    _, alice, bob, conn = run(mono, wall, skew)
    _, ref_alice, ref_bob, _ = REFERENCE
    assert conn.state is State.CONNECTED
    assert alice.names() == ref_alice.names()
    assert bob.names() == ref_bob.names()
    for endpoint, ref in ((alice, ref_alice), (bob, ref_bob)):
        methods = [a.request.method for a in endpoint.actions if isinstance(a, SendRpc)]
        ref_methods = [a.request.method for a in ref.actions if isinstance(a, SendRpc)]
        assert methods == ref_methods


@settings(max_examples=20, deadline=None)
@given(mono=monotonic_starts, wall=wall_starts, skew=behind_skews)
def test_a_client_clock_far_behind_keeps_the_cursors_at_zero(
    mono: int, wall: int, skew: int
) -> None:
    """Stamps that look like they come from the future are not trusted as cursors."""
    _, alice, bob, conn = run(mono, wall, skew)
    assert conn.state is State.CONNECTED
    assert set(sinces(alice, Method.POLL)) == {0}
    assert set(sinces(bob, Method.GET_ICE_CANDIDATES)) == {0}
