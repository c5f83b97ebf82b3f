"""Shared fixtures: the real local stack (Kafka, PostgreSQL, HAProxy) must be up for the fixtures that reach it;
services run as OS processes. Plain helpers live in tests/support/ (re-exported here for the modules that still
import them from this conftest). Unit tests use none of the stack fixtures: `make unit` runs with no stack."""

from __future__ import annotations

import os

import pytest

from releasegate_runtime import db
from releasegate_runtime.settings import ServiceSettings
from tests.support.services import LOGS, REPO, Service, as_principal, register_verifier, wait_until

__all__ = ["LOGS", "REPO", "Service", "as_principal", "register_verifier", "wait_until"]

# The tests run on the local stack, with authentication and ACLs on: the demo keys are trusted only here, and the
# services the tests start authenticate as their own principals.
os.environ.setdefault("RG_ENV", "local")


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The hostile-record campaign runs last: it leaves thousands of refused records on every command topic, and
    a test that starts a new consumer group reading from the earliest offset would wade through them first."""
    fuzz = [i for i in items if "/tests/fuzz/" in str(i.path) and "integration" in i.keywords]
    rest = [i for i in items if i not in fuzz]
    items[:] = rest + fuzz
