"""Shared by the integration tests: the throwaway `it-shop` catalog entry and candidates for it, and the helpers
that run shop bundles as real processes against the stack's Kafka and PostgreSQL (ports, processes, the
business-event topic and a reader of it)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from contracts.events import CandidateSubmitted
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
KAFKA = os.environ.get("RG_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
# the test harness is the shop database's owner (acting as rg_shop_owner there, as the shop's instances do)
SHOP_DB = os.environ.get("SHOP_DATABASE_URL") or ServiceSettings().role_dsn("releasegate", "shop")
TOPIC = "shop.events"
VISA, AMEX = "4111111111111111", "378282246310005"
SUCCESS_TYPES = [
    "shop.checkout.attempted.v1",
    "shop.inventory.reserved.v1",
    "shop.payment.authorized.v1",
    "shop.inventory.confirmed.v1",
    "shop.checkout.succeeded.v1",
    "shop.order.placed.v1",
]
DECLINE_TYPES = [
    "shop.checkout.attempted.v1",
    "shop.inventory.reserved.v1",
    "shop.payment.declined.v1",
    "shop.checkout.failed.v1",
]
EVENT_FIELDS = {
    "version",
    "environment",
    "tenant",
    "instance",
    "checkout_id",
    "order_id",
    "amount_cents",
    "currency",
    "reason",
    "latency_ms",
}
# Fields only some event types carry, on top of EVENT_FIELDS.
OWN_FIELDS = {
    "shop.inventory.reserved.v1": {"items"},
    "shop.inventory.confirmed.v1": {"items"},
    "shop.order.placed.v1": {"items", "customer", "payment_ref", "placed_at", "tax_cents", "region"},
}


def shop_kafka_env() -> dict[str, str]:
    """The Kafka settings a storefront gets from the deployer: the bootstrap and, once the stack has generated it,
    the shop principal's SCRAM credential."""
    env = {"SHOP_KAFKA_BOOTSTRAP": KAFKA}
    password = ServiceSettings().secrets_dir / "kafka" / "shop.password"
    if password.is_file():
        env |= {"SHOP_KAFKA_USERNAME": "shop", "SHOP_KAFKA_PASSWORD": password.read_text().strip()}
    return env


def reachable(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


if not (reachable(KAFKA) and reachable("127.0.0.1:15432")):
    pytest.fail("local stack not running: start it with `make stack`", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def host(who: str) -> dict[str, str]:
    """Headers naming tenant `who`: a client names its tenant by the Host `<tenant>.shop.test` only."""
    return {"Host": f"{who}.shop.test"}


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path
    url: str

    async def wait_healthy(self, timeout: float = 60) -> None:
        async def healthy() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.popen.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    return (await client.get(f"{self.url}/health")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(healthy, timeout, f"{self.name} healthy; log:\n{self.log}")

    def terminate(self) -> int:
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise


def spawn(name: str, args: list[str], cwd: Path, env: dict[str, str], port: int, logs: Path) -> Process:
    log = logs / f"{name}.log"
    popen = subprocess.Popen(args, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return Process(name, popen, log, f"http://127.0.0.1:{port}")


def extract(store: Path, digest: str, target: Path) -> Path:
    blob = (store / "sha256" / f"{digest.removeprefix('sha256:')}.tar.gz").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(target, filter="data")
    return target


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


class Events:
    """Records on the shop topic written after `start()`, filtered by tenant (the record key)."""

    def __init__(self, topic: str) -> None:
        # Subscribed without a group: the consumer gets every partition, with no group rebalance to await.
        self.consumer = AIOKafkaConsumer(
            topic,
            **client_options(ServiceSettings(principal="ops")),
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )

    async def start(self) -> None:
        await self.consumer.start()

        async def assigned() -> bool:
            return bool(self.consumer.assignment())

        await wait_for(assigned, 20, "partitions of the shop topic")
        partitions = list(self.consumer.assignment())
        await self.consumer.seek_to_end(*partitions)
        for p in partitions:
            await self.consumer.position(p)

    async def for_tenant(self, tenant: str, count: int, timeout: float = 20) -> list:
        records = []

        async def enough() -> bool:
            batches = await self.consumer.getmany(timeout_ms=200)
            records.extend(r for batch in batches.values() for r in batch if r.key == tenant.encode())
            return len(records) >= count

        await wait_for(enough, timeout, f"{count} events of tenant {tenant}")
        return records

    async def stop(self) -> None:
        await self.consumer.stop()


@pytest.fixture
async def events(topic) -> AsyncIterator[Events]:
    e = Events(topic)
    try:
        await e.start()
        yield e
    finally:
        await e.stop()


TEST_CATALOG = """
apiVersion: releasegate.dev/v1
kind: Service
revision: 1
name: it-shop
tier: 3
owner: team-test
environments: [staging, production]
kpis:
  checkout_success_rate: {min: 0.5}
"""


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("catalog")
    (d / "it-shop.yaml").write_text(TEST_CATALOG)
    return d


def candidate(service: str = "it-shop") -> CandidateSubmitted:
    rid = f"it-{uuid.uuid4().hex[:10]}"
    return CandidateSubmitted.model_validate(
        {
            "release_id": rid,
            "service": service,
            "version": "v9",
            "artifact": {"digest": "sha256:" + "d" * 64, "uri": "store://none"},
            "source": {"repository": "r", "ref": "refs/heads/main", "commit": "e" * 40},
            "tests": {"passed": 1, "failed": 0},
            "author": "dev@test",
        }
    )


async def saga_state(pool, rid):
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT state FROM sagas WHERE release_id = $1", rid)
