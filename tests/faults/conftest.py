"""Fault tests on the live stack: every service as its own OS process with its /health watched (the fuzz
campaign's stack), shoppers as traffic; each test starts from v1 stable and never leaves the infrastructure
down."""

import pytest

from tests.support.faults.infra import infrastructure_healthy, start_infrastructure
from tests.support.fuzz.stack import stable_v1, watched_stack


@pytest.fixture(scope="package")
async def watched(settings):
    async with watched_stack(settings) as stack:
        yield stack


@pytest.fixture
def from_v1(watched):
    """v1 stable before the scenario; the infrastructure up again after it, whatever happened."""
    stable_v1(watched.env)
    yield watched
    if not infrastructure_healthy():
        start_infrastructure()
