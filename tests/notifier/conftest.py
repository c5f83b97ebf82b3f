"""Fixtures of the notifier's channel tests: a real local HTTP receiver on a free port and a secrets folder
(tests/support/notifier.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.notifier import Receiver, Secrets, serving


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as r:
        yield r


@pytest.fixture
def secrets(tmp_path) -> Secrets:
    return Secrets(tmp_path / "secrets")
