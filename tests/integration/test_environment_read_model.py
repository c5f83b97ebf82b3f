"""The deployer's read model on the real broker and database: a state the deployer stages reaches the gatekeeper's
projection (the gatekeeper as its own OS process), an older state never replaces a newer one, and nobody but the
deployer may write `release.environments` (ACLs)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAuthorizationFailedError
from confluent_kafka.admin import ConfigResource, ResourceType

from contracts import topics
from contracts.cloudevents import Envelope, encode
from contracts.events import EnvironmentState
from releasegate_runtime import bus_admin, db
from releasegate_runtime.kafka import Producer, client_options
from releasegate_runtime.outbox import Relay
from services.deployer import read_model
from tests.support.services import Service, as_principal, wait_until

pytestmark = pytest.mark.integration
DIGEST = "sha256:" + "7" * 64


@pytest.fixture(scope="module")
def gatekeeper():
    svc = Service("gatekeeper").start()
    yield svc
    svc.stop()


@pytest.fixture
async def deployer_pool(settings):
    """The deployer's own database role: what it may read and write is what grants.sql gives it."""
    pool = await db.create_pool(settings.for_principal("deployer").database_url, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
async def deployer_producer(settings):
    producer = Producer(as_principal(settings, "deployer"), "test-read-model")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def environment(pool):
    """A service and environment of this test's own, with a stable version and one serving instance."""
    service, env = f"it-env-{uuid.uuid4().hex[:8]}", f"it-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO environments (service, environment, stable_version, stable_digest) VALUES ($1,$2,'v1',$3)",
            service,
            env,
            DIGEST,
        )
        await conn.execute(
            "INSERT INTO instances (service, environment, version, digest, slot, port, state)"
            " VALUES ($1, $2, 'v1', $3, 's1', 18999, 'serving')",
            service,
            env,
            DIGEST,
        )
    yield service, env
    async with pool.acquire() as conn:
        await conn.execute("UPDATE instances SET state = 'stopped' WHERE service = $1", service)


async def kept(pool, service: str, environment: str) -> EnvironmentState | None:
    async with pool.acquire() as conn:
        state = await conn.fetchval(
            "SELECT state FROM gatekeeper_environments WHERE service = $1 AND environment = $2", service, environment
        )
    return None if state is None else EnvironmentState.model_validate(state)


def state(service: str, environment: str, sequence: int, stable: str) -> EnvironmentState:
    return EnvironmentState(
        service=service,
        environment=environment,
        sequence=sequence,
        stable_version=stable,
        stable_digest=DIGEST,
        serving=[],
        observed_at=datetime.now(UTC),
    )


class TestEnvironmentReadModel:
    async def test_a_state_the_deployer_stages_reaches_the_gatekeepers_projection(
        self, gatekeeper, pool, deployer_pool, deployer_producer, environment
    ):
        service, env = environment
        async with deployer_pool.acquire() as conn:
            staged = await read_model.stage(conn, service, env, {"v1": 100})
        assert (staged.stable_version, staged.serving[0].endpoints) == ("v1", ["http://127.0.0.1:18999"])
        # the deployer's relay publishes it (this one, or the deployer's own if it is running)
        await Relay(deployer_pool, read_model.PRODUCER, deployer_producer.send).publish_pending()

        async def arrived() -> bool:
            got = await kept(pool, service, env)
            return got is not None and got.sequence == staged.sequence

        await wait_until(arrived, 30, "the gatekeeper to keep the published state")
        got = await kept(pool, service, env)
        assert got is not None and got.serving[0].weight == 100 and got.stable_digest == DIGEST

    async def test_an_older_state_arriving_after_a_newer_one_is_ignored(
        self, gatekeeper, pool, settings, deployer_producer, environment
    ):
        service, env = environment
        key = read_model.key(service, env)
        await deployer_producer.send_envelope(
            topics.ENVIRONMENTS, Envelope.new(state(service, env, 20, "v2"), "releasegate/deployer", key)
        )
        older = Envelope.new(state(service, env, 19, "v1"), "releasegate/deployer", key)
        metadata = await deployer_producer.send(topics.ENVIRONMENTS, *encode(older))
        admin = AIOKafkaAdminClient(**client_options(as_principal(settings, "admin")))
        await admin.start()
        try:
            partition = TopicPartition(topics.ENVIRONMENTS, metadata.partition)

            async def past_the_older_one() -> bool:
                offsets = await admin.list_consumer_group_offsets("releasegate-gatekeeper", partitions=[partition])
                committed = offsets.get(partition)
                return committed is not None and committed.offset > metadata.offset

            await wait_until(past_the_older_one, 30, "the gatekeeper to consume the older state")
        finally:
            await admin.close()
        got = await kept(pool, service, env)
        assert got is not None and (got.sequence, got.stable_version) == (20, "v2")

    @pytest.mark.parametrize("principal", ["gatekeeper", "ops", "coordinator", "verifier-business-kpis"])
    async def test_only_the_deployer_may_write_the_environments_topic(self, settings, principal, environment):
        service, env = environment
        forged = Envelope.new(state(service, env, 2**62, "evil"), f"attacker/{principal}", read_model.key(service, env))
        producer = Producer(as_principal(settings, principal), f"attacker-{principal}")
        await producer.start()
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_envelope(topics.ENVIRONMENTS, forged)
        finally:
            await producer.stop()

    async def test_the_environments_topic_keeps_the_latest_state_per_key(self, settings):
        """Compacted: a consumer starting from the beginning years later still finds every environment's state."""
        admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)
        (future,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topics.ENVIRONMENTS)]).values()
        configs = await asyncio.to_thread(future.result, 30)
        assert configs["cleanup.policy"].value == "compact"
