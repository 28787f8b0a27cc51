"""The offer pool machine (`rondevu_core.pool`), driven by hand: the test plays the
WebRTC driver and the server on an integer clock.  Each of these failed before its fix:
refreshes and partial publishes are retried, answers are reported once, and a bogus
far-future answer does not hide later ones.
"""

from __future__ import annotations

from rondevu_core.actions import SendRpc
from rondevu_core.rpc import Method, RpcFailed, RpcOk
from tests.test_core_events import (
    OFFER_ID,
    SDP,
    T0,
    Driver,
    answers,
    published,
    published_pool,
)

NO_ANSWERS = RpcOk(result={"answers": [], "iceCandidates": {}})


def run_pool(d: Driver, seconds: int, *, fail_publishes: int = 0) -> int:
    """Serve the pool for ``seconds``: empty polls, publishes failing ``fail_publishes``
    times and then succeeding.  Returns how many publishService calls were made."""
    publishes = 0
    for _ in range(seconds):
        for action in d.advance(1_000):
            if not isinstance(action, SendRpc):
                continue
            if action.request.method is Method.POLL:
                d.reply(action, NO_ANSWERS)
            elif action.request.method is Method.PUBLISH_SERVICE:
                publishes += 1
                if publishes <= fail_publishes:
                    d.reply(action, RpcFailed(error="Internal server error"))
                else:
                    d.reply(action, published())
    return publishes


def test_a_failed_refresh_is_retried_so_the_offers_do_not_expire() -> None:
    # ttl 300 s, refresh margin 30 s: the refresh is due 270 s after the first publish.
    d, actions = published_pool()
    d.reply(d.call(Method.PUBLISH_SERVICE, actions), published())
    assert run_pool(d, 269) == 0
    # The refresh fails once; the backoff retry (about 1 s later) must publish again.
    assert run_pool(d, 5, fail_publishes=1) == 2
    assert d.named("offers:publish:failed")
    assert len(d.named("offers:published")) == 2


def test_a_publish_reply_omitting_an_offer_is_retried_after_a_backoff_not_at_once() -> None:
    d, actions = published_pool()
    first = d.call(Method.PUBLISH_SERVICE, actions)
    # A misbehaving server stores nothing: no immediate republish (that would loop as fast
    # as the server answers and starve the poll), but a retry after the backoff.
    again = d.reply(first, RpcOk(result={"offers": []}))
    assert [a for a in again if isinstance(a, SendRpc)] == []
    names = [e.name for e in d.events]
    assert names[-3:] == ["protocol:error", "offers:published", "offers:publish:failed"]
    retry = d.call(Method.PUBLISH_SERVICE, d.advance(1_200))
    assert retry.request.params["offers"] == first.request.params["offers"]
    d.reply(retry, published())
    assert len(d.named("offer:created")) == 1


def test_a_duplicate_answer_is_reported_once_not_on_every_poll() -> None:
    # The answers cursor lags 1 ms, so a server that overwrote the applied answer hands
    # the different one back on every poll.
    d, actions = published_pool()
    d.reply(d.call(Method.PUBLISH_SERVICE, actions), published())
    d.reply(d.call(Method.POLL, d.advance(1_000)), answers(("bob", T0 + 500)))
    for _ in range(5):
        d.reply(d.call(Method.POLL, d.advance(1_000)), answers(("carol", T0 + 900)))
    assert len(d.named("answer:duplicate")) == 1


def _poll_reply(*items: tuple[str, str, int]) -> RpcOk:
    """A poll reply of ``(offerId, answererId, answeredAt)`` answers."""
    rows = [{"offerId": o, "answererId": who, "sdp": SDP, "answeredAt": at} for o, who, at in items]
    return RpcOk(result={"answers": rows, "iceCandidates": {}})


def test_a_bogus_far_future_answer_does_not_hide_later_answers() -> None:
    # One row from a glitching server (another offer, answeredAt 2**53 - 1) moved the
    # cursor past every real answer: the pool polled on and never saw bob's.
    d, actions = published_pool()
    d.reply(d.call(Method.PUBLISH_SERVICE, actions), published())
    poll = d.call(Method.POLL, d.advance(1_000))
    d.reply(poll, _poll_reply(("f" * 64, "mallory", 2**53 - 1)))
    poll = d.call(Method.POLL, d.advance(1_000))
    assert poll.request.params["since"] < d.now
    d.reply(poll, _poll_reply((OFFER_ID, "mallory", 2**53 - 1)))  # even for our own offer
    poll = d.call(Method.POLL, d.advance(1_000))
    assert poll.request.params["since"] < d.now
    d.reply(poll, answers(("bob", d.now - 10)))
    poll = d.call(Method.POLL, d.advance(1_000))
    assert poll.request.params["since"] == d.now - 1_000 - 11
