"""Shared fixtures: the real local stack (Kafka, PostgreSQL, HAProxy) must be up for the fixtures that reach it;
services run as OS processes. Plain helpers live in tests/support/ (re-exported here for the modules that still
import them from this conftest). Unit tests use none of the stack fixtures: `make unit` runs with no stack."""

from __future__ import annotations

import os
import sys

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
    items[:] = _default_stack_together(rest) + fuzz


def _on_default_stack(item: pytest.Item) -> bool:
    """Whether `item` runs on the end-to-end release stack with the default catalog (tests/e2e/conftest.py)."""
    defs = item._fixtureinfo.name2fixturedefs.get("catalog_env")  # pytest has no public accessor
    return "services" in item.fixturenames and bool(defs) and defs[-1].func.__module__ == "tests.e2e.conftest"


def _default_stack_together(items: list[pytest.Item]) -> list[pytest.Item]:
    """The modules on the default release stack (e2e, browser, security) run one after another where the first
    of them would, so that they share one start of it; every other test keeps its place."""
    shared = [i for i in items if _on_default_stack(i)]
    if not shared:
        return items
    at = items.index(shared[0])
    rest = [i for i in items if not _on_default_stack(i)]
    return rest[:at] + shared + rest[at:]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """The end-to-end release stack is shared by consecutive modules that use it (tests/e2e/conftest.py); it is
    stopped before a test that does not, which may start services of its own on the same ports and groups."""
    outcome = yield
    if nextitem is None or "services" not in nextitem.fixturenames:
        e2e = sys.modules.get("tests.e2e.conftest")
        if e2e is not None:
            e2e.shared_stack.close()
    return outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    e2e = sys.modules.get("tests.e2e.conftest")
    if e2e is not None:
        e2e.shared_stack.close()
