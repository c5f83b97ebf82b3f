"""The live stack the hostile-record campaign runs against (every service with its /health watched)."""

import pytest

from tests.support.fuzz.stack import watched_stack


@pytest.fixture(scope="module")
async def watched(settings):
    async with watched_stack(settings) as stack:
        yield stack
