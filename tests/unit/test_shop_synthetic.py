"""The shop's synthetic journey: an issuer's decline is not the release's fault and is tried once more; the
candidate's own failures count at once."""

from __future__ import annotations

import pytest

from shop import synthetic
from shop.shopper import JourneyResult


def scripted(*results: JourneyResult):
    calls: list[str] = []
    queue = list(results)

    async def run_journey(client, base_url, tenant, card, rng=None):
        calls.append(card)
        return queue.pop(0)

    return run_journey, calls


@pytest.mark.parametrize(
    "first,expected_calls,success",
    [
        (JourneyResult("acme", success=False, reason="checkout: insufficient_funds"), 2, True),
        (JourneyResult("acme", success=False, reason="checkout: invalid_card"), 1, False),
        (JourneyResult("acme", success=False, reason="checkout: HTTP 500"), 1, False),
        (JourneyResult("acme", success=True), 1, True),
    ],
)
async def test_only_an_issuer_decline_is_tried_again(monkeypatch, first, expected_calls, success):
    run_journey, calls = scripted(first, JourneyResult("acme", success=True))
    monkeypatch.setattr(synthetic, "run_journey", run_journey)
    result = await synthetic.journey(None, "http://shop", "acme", "visa")
    assert (len(calls), result.success) == (expected_calls, success)
    assert len(set(calls)) == 1  # the same test card both times


async def test_a_second_decline_counts_against_the_journey(monkeypatch):
    decline = JourneyResult("acme", success=False, reason="checkout: insufficient_funds")
    run_journey, calls = scripted(decline, decline)
    monkeypatch.setattr(synthetic, "run_journey", run_journey)
    assert not (await synthetic.journey(None, "http://shop", "acme", "amex")).success and len(calls) == 2
