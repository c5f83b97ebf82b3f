"""Hostile records on every topic a service consumes, through the real broker with legitimate credentials
(a CI-sized run of the campaign `make bench-fuzz` runs at 10,000): none may stall a consumer, crash a
process or be silently dropped, and a valid release behind them is still promoted."""

from __future__ import annotations

import pytest

from releasegate_runtime.bus import BusPolicy
from tests.support.fuzz.campaign import run
from tests.support.fuzz.hostile import generate
from tests.support.fuzz.targets import targets

pytestmark = [pytest.mark.slow, pytest.mark.integration]
RECORDS = 1_200
SEED = 20261128  # fixed: CI sends the same records every run


@pytest.mark.timeout(1_500)
async def test_every_hostile_record_is_refused_and_a_valid_release_behind_them_is_promoted(settings, pool, watched):
    among = targets(BusPolicy.load(settings.bus_policy_file))
    figures = await run(
        settings, pool, watched, among, generate(RECORDS, among, SEED), stall_seconds=120, limit_seconds=600
    )
    report = "\n".join(figures.lines())
    print(report)
    assert figures.sent >= 1_000 and not figures.refused_by_broker, report
    assert not figures.unaccounted, report
    assert figures.dead_lettered + figures.parked == figures.sent, report
    assert not figures.crashes, report
    assert not figures.unhealthy, report
    assert figures.valid_ok, report
