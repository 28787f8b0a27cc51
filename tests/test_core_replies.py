"""`rondevu_core.rules.replies.parse_published`: the offers, and keepsAnsweredOffers."""

from __future__ import annotations

from typing import Any

import pytest

from rondevu_core.errors import ProtocolError
from rondevu_core.rules.replies import Publication, parse_published

OFFER = {"offerId": "ab" * 32, "sdp": "v=0", "createdAt": 1, "expiresAt": 2}


def result(**extra: Any) -> dict[str, Any]:
    return {"serviceId": "s", "offers": [OFFER], "createdAt": 1, "expiresAt": 2, **extra}


def test_offers_in_the_order_sent_and_no_promise_from_0_5_4() -> None:
    second = {**OFFER, "offerId": "cd" * 32, "sdp": "v=1"}
    parsed = parse_published(result(offers=[OFFER, second]))
    assert parsed == Publication(
        offers=(("ab" * 32, "v=0"), ("cd" * 32, "v=1")), keeps_answered_offers=False
    )


def test_only_json_true_is_the_promise() -> None:
    assert parse_published(result(keepsAnsweredOffers=True)).keeps_answered_offers
    others: list[object] = [False, None, 1, "true", {}]
    for other in others:
        # A server that did not clearly promise is read as 0.5.4: the safe rule.
        assert not parse_published(result(keepsAnsweredOffers=other)).keeps_answered_offers


@pytest.mark.parametrize(
    "bad",
    [None, [], {"offers": None}, {"offers": [None]}, {"offers": [{"offerId": "x"}]}],
)
def test_malformed_results_are_protocol_errors(bad: object) -> None:
    with pytest.raises(ProtocolError):
        parse_published(bad)
