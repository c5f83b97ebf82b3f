"""Shared fixtures: the real local stack (Kafka, PostgreSQL, HAProxy) must be up; services run as OS processes."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from services.common import db
from services.common.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / ".run" / "logs"


@pytest.fixture(scope="session")
def settings() -> ServiceSettings:
    return ServiceSettings()


@pytest.fixture(scope="session")
async def pool(settings):
    try:
        p = await db.create_pool(settings.database_url, max_size=4)
    except OSError as exc:
        pytest.fail(f"PostgreSQL not reachable ({exc}): start the stack with `make stack`", pytrace=False)
    await db.apply_schema(p)
    yield p
    await p.close()


async def wait_until(check: Callable[[], Awaitable[object]], timeout: float, what: str) -> object:
    """Poll `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


class Service:
    """One releasegate service (or, with `package="verifiers"`, a team verifier) as its own OS process, as
    `deploy/services.sh` starts it."""

    def __init__(self, name: str, env: dict[str, str] | None = None, package: str = "services") -> None:
        self.name, self.env, self.module = name, env or {}, f"{package}.{name}"
        self.proc: subprocess.Popen | None = None
        self.log = LOGS / f"test-{name}.log"

    def start(self) -> Service:
        LOGS.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], cwd=REPO,
                                     env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
