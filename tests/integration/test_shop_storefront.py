"""Shop bundles as real processes against the local stack's Kafka and PostgreSQL.

Starts the payment sandbox and the built v2 and v3 bundles (extracted, run standalone with their own
entrypoint), runs shopper journeys and checks the orders in the database and the business events on Kafka.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from contracts.cloudevents import decode, header_dict
from services.common.kafka import client_options
from services.common.settings import ServiceSettings
from shop.build_bundles import build_all
from shop.shopper import run_journey

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KAFKA = os.environ.get("RG_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
# the test harness is the shop database's owner (acting as rg_shop_owner there, as the shop's instances do)
SHOP_DB = os.environ.get("SHOP_DATABASE_URL") or ServiceSettings().role_dsn("releasegate", "shop")
TOPIC = "shop.events"
VISA, AMEX = "4111111111111111", "378282246310005"
SUCCESS_TYPES = ["shop.checkout.attempted.v1", "shop.inventory.reserved.v1", "shop.payment.authorized.v1",
                 "shop.inventory.confirmed.v1", "shop.checkout.succeeded.v1", "shop.order.placed.v1"]
DECLINE_TYPES = ["shop.checkout.attempted.v1", "shop.inventory.reserved.v1", "shop.payment.declined.v1",
                 "shop.checkout.failed.v1"]
EVENT_FIELDS = {"version", "environment", "tenant", "instance", "checkout_id", "order_id", "amount_cents", "currency",
                "reason", "latency_ms"}
# Fields only some event types carry, on top of EVENT_FIELDS.
OWN_FIELDS = {"shop.inventory.reserved.v1": {"items"}, "shop.inventory.confirmed.v1": {"items"},
              "shop.order.placed.v1": {"items", "customer", "payment_ref", "placed_at", "tax_cents", "region"}}


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


@pytest.fixture(scope="module")
async def shops(tmp_path_factory, topic) -> AsyncIterator[dict[str, Process]]:
    """The payment sandbox plus v2 (staging) and v3 (production) storefronts, started at the same time."""
    work = tmp_path_factory.mktemp("shop")
    digests = build_all(work / "store")
    # The bundles must run standalone, so nothing of this repository is put on their path.
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    sandbox_port = free_port()
    sandbox = spawn("payment-sandbox",
                    [sys.executable, "-m", "shop.payment_sandbox", "--port", str(sandbox_port), "--decline-rate", "0"],
                    REPO, base_env, sandbox_port, work)
    shops = {}
    for version, environment in (("v2", "staging"), ("v3", "production")):
        port = free_port()
        env = base_env | {"SHOP_PORT": str(port), "SHOP_ENVIRONMENT": environment,
                          "SHOP_INSTANCE_ID": f"it-{version}-{port}", **shop_kafka_env(),
                          "SHOP_DATABASE_URL": SHOP_DB, "SHOP_PAYMENT_URL": sandbox.url, "SHOP_EVENTS_TOPIC": topic}
        bundle = extract(work / "store", digests[version], work / version)
        shops[version] = spawn(f"storefront-{version}", [sys.executable, "-m", "storefront"], bundle, env, port, work)
    try:
        await asyncio.gather(sandbox.wait_healthy(), *(p.wait_healthy() for p in shops.values()))
        yield shops
    finally:
        codes = {p.name: p.terminate() for p in [*shops.values(), sandbox] if p.popen.poll() is None}
    assert codes == {p.name: 0 for p in [*shops.values(), sandbox]}, f"unclean shutdown: {codes}"


class Events:
    """Records on the shop topic written after `start()`, filtered by tenant (the record key)."""

    def __init__(self, topic: str) -> None:
        # Subscribed without a group: the consumer gets every partition, with no group rebalance to await.
        self.consumer = AIOKafkaConsumer(topic, **client_options(ServiceSettings(principal="ops")),
                                         enable_auto_commit=False,
                                         auto_offset_reset="latest")

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


def check_contract(record, tenant: str, environment: str, instance: str, version: str) -> dict:
    headers = header_dict(record.headers)
    envelope = decode(record.headers, record.value)
    assert headers["ce_specversion"] == "1.0"
    assert uuid.UUID(headers["ce_id"]).version == 4
    assert headers["ce_source"] == f"shop/{environment}/{instance}"
    assert headers["ce_tenant"] == tenant
    assert headers["content-type"] == "application/json"
    assert datetime.fromisoformat(headers["ce_time"]).utcoffset().total_seconds() == 0
    data = json.loads(record.value)
    assert set(data) == EVENT_FIELDS | OWN_FIELDS.get(headers["ce_type"], set())
    assert (data["version"], data["environment"], data["tenant"], data["instance"]) == (
        version, environment, tenant, instance)
    assert envelope.type == headers["ce_type"]
    return data


async def test_v2_visa_journey_places_the_order_and_emits_its_events(shops, events):
    shop, who = shops["v2"], tenant()
    async with httpx.AsyncClient(timeout=10) as client:
        result = await run_journey(client, shop.url, who, VISA)
        products = (await client.get(f"{shop.url}/products", headers={"X-Tenant": who})).json()["products"]
        metrics = (await client.get(f"{shop.url}/metrics")).text
    assert result.success, result
    assert result.version == "v2" and result.instance.startswith("it-v2-")
    assert len(products) >= 8 and all("badge" in p for p in products)
    assert 'shop_checkouts_total{outcome="succeeded",version="v2"}' in metrics
    assert 'route="/orders/{id}"' in metrics

    conn = await asyncpg.connect(SHOP_DB)
    try:
        order = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", result.order_id)
        payment = await conn.fetchrow("SELECT * FROM payments WHERE order_id = $1", result.order_id)
    finally:
        await conn.close()
    assert (order["tenant"], order["version"], order["environment"], order["status"]) == (
        who, "v2", "staging", "confirmed")
    assert payment["auth_code"] and payment["amount_cents"] == order["amount_cents"] > 0

    records = await events.for_tenant(who, len(SUCCESS_TYPES))
    assert [header_dict(r.headers)["ce_type"] for r in records] == SUCCESS_TYPES
    data = [check_contract(r, who, "staging", result.instance, "v2") for r in records]
    assert len({d["checkout_id"] for d in data}) == 1
    assert [d["order_id"] for d in data] == [None, None, None, result.order_id, result.order_id, result.order_id]
    assert all(d["amount_cents"] == order["amount_cents"] and d["reason"] is None for d in data)


async def test_tenant_is_taken_from_the_host_subdomain(shops):
    shop, who = shops["v2"], tenant()
    async with httpx.AsyncClient(timeout=10) as client:
        cart = (await client.post(f"{shop.url}/cart", json={"items": [{"sku": "MUG-004", "qty": 1}]},
                                  headers={"Host": f"{who}.shop.local"})).json()
        other = await client.post(f"{shop.url}/checkout", json={"cart_id": cart["cart_id"], "card_number": VISA},
                                  headers={"X-Tenant": tenant()})
        own = await client.post(f"{shop.url}/checkout", json={"cart_id": cart["cart_id"], "card_number": VISA},
                                headers={"X-Tenant": who})
    assert other.status_code == 404
    assert own.status_code == 201 and own.json()["status"] == "confirmed"
    assert own.headers["X-Shop-Version"] == "v2"


async def test_v3_declines_amex_as_invalid_card_but_still_takes_visa(shops, events):
    shop, amex_tenant, visa_tenant = shops["v3"], tenant(), tenant()
    async with httpx.AsyncClient(timeout=10) as client:
        declined = await run_journey(client, shop.url, amex_tenant, AMEX)
        approved = await run_journey(client, shop.url, visa_tenant, VISA)
    assert approved.success and approved.version == "v3"
    assert not declined.success and declined.version == "v3"
    assert declined.reason == "checkout: invalid_card"
    assert [(s.name, s.status) for s in declined.steps][-1] == ("checkout", 402)

    records = await events.for_tenant(amex_tenant, len(DECLINE_TYPES))
    assert [header_dict(r.headers)["ce_type"] for r in records] == DECLINE_TYPES
    data = [check_contract(r, amex_tenant, "production", declined.instance, "v3") for r in records]
    assert [d["reason"] for d in data] == [None, None, "invalid_card", "invalid_card"]
    assert all(d["order_id"] is None for d in data)
    conn = await asyncpg.connect(SHOP_DB)
    try:
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE tenant = $1", amex_tenant) == 0
        # the stock held for the declined checkout went back
        assert await conn.fetchval("SELECT array_agg(status) FROM inventory_reservations WHERE tenant = $1",
                                   amex_tenant) == ["released"]
    finally:
        await conn.close()
