"""A service started while PostgreSQL restarts waits for it instead of exiting (found by the live chaos soak: a
verifier restarted during the PostgreSQL restart exited twice and was left to its supervisor)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import structlog

from releasegate_runtime import runner


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(runner, "STARTUP_RETRY_SECONDS", 0.001)
    monkeypatch.setattr(runner, "STARTUP_RETRY_CAP_SECONDS", 0.002)


def refused_then(answers: list[BaseException | str]):
    tried: list[int] = []

    async def connect() -> str:
        tried.append(1)
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return connect, tried


async def test_the_pool_is_made_once_postgresql_answers():
    connect, tried = refused_then(
        [ConnectionRefusedError(111, "refused"), asyncpg.CannotConnectNowError("shutting down"), "pool"]
    )
    got = await runner._when_reachable("PostgreSQL", connect, asyncio.Event(), structlog.get_logger())
    assert got == "pool" and len(tried) == 3


async def test_a_stopped_service_gives_up_with_the_last_error():
    stop = asyncio.Event()
    stop.set()
    connect, tried = refused_then([ConnectionRefusedError(111, "refused")])
    with pytest.raises(ConnectionRefusedError):
        await runner._when_reachable("PostgreSQL", connect, stop, structlog.get_logger())
    assert len(tried) == 1


async def test_an_error_that_is_not_an_outage_is_not_waited_out():
    connect, tried = refused_then([asyncpg.InvalidPasswordError("password authentication failed")])
    with pytest.raises(asyncpg.InvalidPasswordError):
        await runner._when_reachable("PostgreSQL", connect, asyncio.Event(), structlog.get_logger())
    assert len(tried) == 1
