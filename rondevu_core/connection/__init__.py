"""The durable connection: one logical link to a peer, over one peer connection at a time.

Theory of operation
-------------------
A `Connection` consumes `rondevu_core.inputs` through `handle` and ``handle_timer``, and
queues `rondevu_core.actions` and `rondevu_core.events` on its `Outbox`; the driver
drains them with `next_action` / `next_event` and keeps one timer at `get_timer`.  It
never reads a clock (``now`` comes with every input) nor a random source (the backoff
jitter comes from the injected ``unit_random``).

States (the ten of the 0.18.9 client)::

    INITIALIZING  no peer connection yet (answerer: fetching an offer)
    GATHERING     the local description is being created / published
    SIGNALING     our description is out, waiting for the peer's (or for ICE to start)
    CHECKING      ICE is checking candidate pairs
    CONNECTING    ICE connected but the data channel is not open yet (or the reverse)
    CONNECTED     ICE connected *and* data channel open: messages flow
    DISCONNECTED  an established link dropped
    RECONNECTING  waiting for (or running) the backoff timer of the next attempt
    FAILED        an attempt failed; terminal unless a reconnection is pending
    CLOSED        closed for good: absorbs every report, never acts again

Roles.  An **answerer** (`Connection.answerer`, started by `Connect`) fetches an offer of
its service with getService, answers it, exchanges candidates, and reconnects after a
failure by fetching a *fresh* offer of the same service from the same user (pinned from
the first reply) and building a new peer connection (B13).  An **offerer** connection is
created by `rondevu_core.pool.OfferPool`, which publishes its offer and hands it the
answer; it never reconnects by itself (its peer comes back as a new answer to a new
offer) and closes its peer connection on failure so the pool can replace it (B14).

Transitions are data: `TRANSITIONS` maps every accepted ``(State, trigger)`` - an
input's `InputKind`, or one of the connection's timers falling due - to a `Transition`:
its handler and the states it may lead to.  A pair that is not in the table is a usage
error for application commands (`UsageError` raised at the caller) and a protocol error
for driver reports (a ``protocol:error`` event; the state does not change).  Reports
naming a peer connection other than the current one are stale (the driver raced our
close) and are dropped; in CLOSED every report and RPC result is dropped.  Each row
declares the moves (state changes) its handler may make, from named sets such as
``LOSS`` and ``PROGRESS``; its ``leads_to`` follows them from its state, and `EDGES`,
every state change a connection makes, is their union with the moves of the offer
pool's calls (`start_offer`, `offer_published`, `apply_answer`, `resume_with`: the one
way into an offerer outside the table).  The tests hold every step to its row.

Failures.  ICE ``failed``, a peer-connection ``failed``, an unrequested ``closed`` (how
aiortc reports a vanished peer), the data channel closing, a failed peer operation, a
failed signaling call (except an answerOffer whose reply fails after the link came up
on that answer: that is only reported) or the connection timeout all end the current
attempt: the peer connection is closed, then the machine reconnects (answerer,
reconnection enabled, not exhausted, not paused) or stays FAILED.  ICE ``disconnected``
on an established link is softer: the old peer connection is kept while the backoff
timer runs, and the link is restored at no cost if ICE recovers first (browsers recover
from short outages).

Messages sent while not CONNECTED are buffered (bounded, aged) and replayed in order on
(re)connection; every message that leaves the buffer undelivered is reported.

The session layer.  When both descriptions carry the session attribute
(`rondevu_core.delivery.negotiation`), the data channel carries the frames of a
`DeliverySession` instead of plain messages: it outlives the peer connection, numbers,
acknowledges and retransmits messages (exactly once, in order, across reconnections)
and owns the heartbeat whose silence ends the current attempt like any other failure.
Once a session exists, sends go into its bounded window (no age limit) instead of the
buffer.  The answerer draws the session id and keeps it across its attempts; the
offerer learns it from the answer.  An offerer with a session does not give up when
its link is lost: it waits in RECONNECTING (``resume_timeout_ms``) for its pool to hand
it the peer connection of a new offer that the same session answered (`resume_with`).
An answerer whose fetched offer comes from another process (another epoch, or no
attribute at all) ends the old session with ``session:reset``.

Modules
-------
One class in layers, each module using only those below it: `states` (states, roles,
named moves), `base` (every field, queries, output helpers), `sending` (buffer, session
layer, negotiation), `link` (connected, failure, teardown, reconnection policy),
`attempts` (the answerer's attempts, the offerer's interface for the pool), `reports`
(the driver's peer reports) and `table` (`Connection`: inputs, timers, `TRANSITIONS`).
"""

from rondevu_core.connection.states import Role, State
from rondevu_core.connection.table import EDGES, TRANSITIONS, Connection

__all__ = ["EDGES", "TRANSITIONS", "Connection", "Role", "State"]
