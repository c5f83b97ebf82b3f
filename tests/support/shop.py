"""The sample shop as real processes for the integration tests and the team verifiers' tests: its bundles run as
storefronts against the stack's Kafka and PostgreSQL (ports, processes, the business-event topic and a reader of
it), a database of its own as an earlier release left it, and the payment and ERP sandboxes. Plain helpers: the
fixtures built on them live in tests/integration/conftest.py and the test modules."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer

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


def stack_reachable() -> bool:
    """Kafka and PostgreSQL of the local stack answer."""
    return reachable(KAFKA) and reachable("127.0.0.1:15432")


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


# The schema as releases before the ERP export, tax and reservations created it.
EARLIER_SCHEMA = """
CREATE TABLE customers (id uuid PRIMARY KEY, tenant text NOT NULL, email text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), UNIQUE (tenant, email));
CREATE TABLE products (sku text PRIMARY KEY, name text NOT NULL,
    price_cents integer NOT NULL CHECK (price_cents > 0), currency text NOT NULL);
CREATE TABLE inventory (sku text PRIMARY KEY REFERENCES products (sku),
    quantity integer NOT NULL CHECK (quantity >= 0));
CREATE TABLE carts (id uuid PRIMARY KEY, tenant text NOT NULL, items jsonb NOT NULL,
    status text NOT NULL DEFAULT 'open', created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id uuid PRIMARY KEY, tenant text NOT NULL, version text NOT NULL, environment text NOT NULL,
    customer_id uuid REFERENCES customers (id), cart_id uuid REFERENCES carts (id), amount_cents integer NOT NULL,
    currency text NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE payments (order_id uuid PRIMARY KEY REFERENCES orders (id), auth_code text NOT NULL,
    amount_cents integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
"""
EARLIER_ORDER = "11111111-2222-4333-8444-555555555555"
BASKET = [{"sku": "TEE-001", "qty": 1}, {"sku": "HOOD-002", "qty": 1}]  # 1900 + 5900


def db_url(name: str) -> str:
    return SHOP_DB.rsplit("/", 1)[0] + f"/{name}"


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A database of its own, as an earlier release left it (with one order), dropped afterwards."""
    name = f"shop_it_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(db_url("releasegate"))  # not from `shop`, where the owner acts as rg_shop_owner
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    try:
        conn = await asyncpg.connect(db_url(name))
        try:
            await conn.execute(EARLIER_SCHEMA)
            await conn.execute(
                "INSERT INTO orders (id, tenant, version, environment, amount_cents, currency, status)"
                " VALUES ($1, 'acme', 'v1', 'production', 1900, 'USD', 'confirmed')",
                EARLIER_ORDER,
            )
        finally:
            await conn.close()
        yield db_url(name)
    finally:
        admin = await asyncpg.connect(db_url("releasegate"))
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


class Erp:
    """The ERP sandbox process, asked over its HTTP API."""

    def __init__(self, process: Process) -> None:
        self.process, self.url = process, process.url

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(timeout=5) as client:
            return await client.request(method, self.url + path, **kwargs)

    async def faults(self, **faults: Any) -> None:
        assert (await self.call("POST", "/faults", json=faults)).status_code == 200

    async def orders(self, tenant: str) -> dict[str, dict]:
        answer = await self.call("GET", "/orders", params={"tenant": tenant})
        return {o["order_id"]: o for o in answer.json()["orders"]}

    async def rejections(self, tenant: str) -> list[dict]:
        return (await self.call("GET", "/rejections", params={"tenant": tenant})).json()["rejections"]

    async def wait_for_orders(self, tenant: str, order_ids: set[str], timeout: float = 60) -> dict[str, dict]:
        received: dict[str, dict] = {}

        async def arrived() -> bool:
            received.update(await self.orders(tenant))
            return order_ids <= set(received)

        await wait_for(arrived, timeout, f"orders {sorted(order_ids - set(received))} in the ERP")
        return received


@dataclass
class Shop:
    """A shop database with storefronts of several versions on it, and the sandboxes they talk to."""

    work: Path
    digests: dict[str, str]
    database: str
    topic: str
    payment: Process
    erp: Erp
    storefronts: dict[str, Process]

    def start(self, name: str, version: str, database: str | None = None, adopt_after_s: float = 8) -> Process:
        """Spawn a storefront of a version against this shop's sandboxes; the caller stops it."""
        port, bundle = free_port(), self.work / version
        if not bundle.exists():
            extract(self.work / "store", self.digests[version], bundle)
        env = BASE_ENV | {
            "SHOP_PORT": str(port),
            "SHOP_ENVIRONMENT": "production",
            "SHOP_INSTANCE_ID": name,
            **shop_kafka_env(),
            "SHOP_DATABASE_URL": database or self.database,
            "SHOP_PAYMENT_URL": self.payment.url,
            "SHOP_EVENTS_TOPIC": self.topic,
            "ERP_SANDBOX_URL": self.erp.url,
            "SHOP_ERP_ADOPT_AFTER_SECONDS": str(adopt_after_s),
        }
        return spawn(f"storefront-{name}", [sys.executable, "-m", "storefront"], bundle, env, port, self.work)

    async def fetch(self, query: str, *args: Any, database: str | None = None) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database or self.database)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()


# The bundles must run standalone, so nothing of this repository is put on their path.
BASE_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def sandbox(module: str, args: list[str], work: Path) -> Process:
    port = free_port()
    return spawn(
        module.rsplit(".", 1)[1], [sys.executable, "-m", module, "--port", str(port), *args], REPO, BASE_ENV, port, work
    )


async def checkout(shop: Process, who: str, items: list[dict] = BASKET, card: str = VISA) -> httpx.Response:
    headers = host(who)
    async with httpx.AsyncClient(timeout=10) as client:
        cart = await client.post(f"{shop.url}/cart", json={"items": items}, headers=headers)
        assert cart.status_code == 201, cart.text
        return await client.post(
            f"{shop.url}/checkout",
            headers=headers,
            json={"cart_id": cart.json()["cart_id"], "card_number": card, "email": f"buyer@{who}.example"},
        )
