"""Fixtures of the integration tests: the local stack must answer (checked once, before the first test here), the
shop's business-event topic and a reader of it, and the throwaway `it-shop` catalog. The helpers they are built on
live in tests/support/ (shop.py, releases.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings
from tests.support.releases import TEST_CATALOG
from tests.support.shop import TOPIC, Events, stack_reachable
from tests.support.verifiers import RegistryWriter


@pytest.fixture(scope="session", autouse=True)
def local_stack() -> None:
    """Every integration test needs Kafka and PostgreSQL: say so once, plainly, rather than as a timeout."""
    if not stack_reachable():
        pytest.fail("local stack not running: start it with `make stack`", pytrace=False)


@pytest.fixture(scope="module")
async def topic() -> str:
    admin = AIOKafkaAdminClient(**client_options(ServiceSettings(principal="admin")))
    await admin.start()
    try:
        if TOPIC not in await admin.list_topics():
            try:
                await admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    return TOPIC


@pytest.fixture
async def events(topic) -> AsyncIterator[Events]:
    e = Events(topic)
    try:
        await e.start()
        yield e
    finally:
        await e.stop()


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("catalog")
    (d / "it-shop.yaml").write_text(TEST_CATALOG)
    return d


@pytest.fixture(scope="module")
async def registry_writer(settings, pool) -> AsyncIterator[RegistryWriter]:
    """Verifiers run in-process by a test module register through this writer (see tests/support/verifiers.py)."""
    writer = RegistryWriter(settings, pool)
    yield writer
    await writer.close()
