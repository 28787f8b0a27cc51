"""The offer pool: the offerer side of ``publishService`` + ``startFilling`` (as client 0.18.9).

An `OfferPool` owns one offerer `Connection` per offer and one `Outbox` shared with them,
so a driver runs the whole pool as one machine: `handle`, `get_timer` / `handle_timer`,
`next_action` / `next_event`.  Peer reports are routed by ``pc_id``, RPC results by
``call_id``, application commands by ``connection_id``.

Rules (each fixes a bug of the original; docs/compatibility.md):

- **Full pool.**  Only *unanswered* offers count toward ``max_offers`` (B11); creating
  an offer reserves its slot at once, so concurrent refills cannot overshoot or
  undershoot (B7).  The pool never holds more than ``max_offers`` unanswered offers.
- **One publication for the whole pool.**  Server 0.5.4 replaces a service with every
  publishService (§7.2), deleting the previous offers and their candidates.  So the pool
  publishes all its unanswered offers in one call and republishes them (to add new
  offers or to refresh them before ``ttl_ms`` runs out), never while a publish or a poll
  is in flight.  A republish deletes the server's copy of the unanswered offers'
  candidates, so each retained offer re-uploads its trickled ones.
- **No republish can delete a handshake in progress (B8).**  Against 0.5.4 the pool
  republishes only while no handshake is pending, so while k handshakes are pending it
  holds ``max_offers - k`` published offers and refills once they settle (a handshake
  that succeeds is noticed by the next poll's refill, a failed one at once).  Our
  server replaces only the *unanswered* offers and keeps the answered ones with their
  candidates; it says so with ``keepsAnsweredOffers: true`` in the publishService
  result.  The pool remembers that flag from the latest successful publish and, while
  it is set, republishes whatever handshakes are pending: the pool then holds
  ``max_offers`` unanswered offers at all times but during the publish round trip
  (B7, B11).  Before the first publish returns the flag is unknown, hence off.
- **Answers exactly once.**  One ``poll`` at a time (B6), every ``poll_interval_ms``.  Its
  answers cursor is its own (B20) and lags one millisecond behind the newest
  ``answeredAt`` seen, so two answers stored in the same millisecond are both seen;
  each offer takes one answer (a latch in `Connection.apply_answer`), and a different
  answer for an answered offer is reported as ``answer:duplicate``.  Remote candidates
  come from each connection's own getIceCandidates stream, not from ``poll``.
- **Long polling** (``connection.long_poll_wait_ms`` set: the server holds calls,
  docs/long-polling.md).  The poll carries ``waitMs`` and goes alone
  (``Urgency.HELD``); the server answers it when an answer or candidate arrives, and
  the next one leaves as soon as its reply is in, so an idle pool makes one request per
  hold.  A held poll is never sent while a publication is due (an offer without an id,
  a refresh, a retry): it would keep the publish waiting, so the pool polls plainly at
  its interval until the publish is done, then holds again at once; and a hold never
  outlasts the next refresh.  The 1 ms lag of the cursor would make every held poll
  return at once, so a held poll uses the exact newest timestamp seen (answers and
  candidates: the server counts both as news) once a lagged read has confirmed nothing
  else shares that millisecond: news costs one immediate lagged read, then the pool
  holds again.  A reply that came back early with nothing new (a server at a bound,
  shutting down, a row we ignore) sends the pool back to its plain interval once, so
  it never spins.  A publication that becomes due while a poll is held (a failed
  connection's replacement, say) cancels that poll (`CancelRpc`) rather than wait for
  it: a poll only reads, so the next one, with the same cursor, loses nothing.
- **Failed connections are closed, then replaced** (B14): a connection that fails
  closes its peer connection, the pool closes the connection and creates a new offer.
- **Sessions resume.**  With the session layer on, every offer names this pool's epoch
  (drawn once, on first use) and an answer names its session.  An answer naming the
  session of a connection the pool still holds (waiting for its peer, or not yet aware
  that the link died) is handed to *that* connection (`Connection.resume_with`): the
  application keeps one connection object and the session retransmits what it had not
  delivered.  The answered offer's own connection closes without ever being announced.
- **Offers gone behind its back are published again** (`rondevu_core.rules.republish`): once
  per poll interval (every `LOOK_INTERVAL_HELD_MS` while polls are held, and at once
  when a poll succeeds after failing) the pool looks its own service up; when its
  offers are gone (server restart, expiry, another process with the same identity) it
  republishes at once and says so with ``service:republished``; a look that gets no
  answer is reported as ``signaling:error`` (pool-wide: ``connection_id`` 0).
- **A permanent publish failure stops the pool** (`rondevu_core.rules.error_kinds`): a name
  held by another key or a malformed call fails the same way every time, so the pool
  reports ``error:permanent`` and goes back to IDLE instead of retrying for ever.

After `Close` (pool-wide) every connection is closed and the pool never acts again.

Modules
-------
One class in layers, each module using only those below it: `states` (states,
deadlines, constants), `base` (every field, queries, call and shutdown helpers),
`publishing` (publication, refills, presence look-ups), `answers` (polling, answers,
resumed sessions, settling) and `table` (`OfferPool`: inputs, timers,
`POOL_TRANSITIONS`).
"""

from rondevu_core.pool.states import LOOK_INTERVAL_HELD_MS, PoolState
from rondevu_core.pool.table import POOL_TRANSITIONS, OfferPool

__all__ = ["LOOK_INTERVAL_HELD_MS", "POOL_TRANSITIONS", "OfferPool", "PoolState"]
