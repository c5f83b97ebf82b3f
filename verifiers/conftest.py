"""Fixtures of the team verifiers' integration tests: the shop's real bundles as storefront processes on a
database of their own, exporting to the local stack's ERP sandbox (`bash deploy/stack.sh up`), paying at a
payment sandbox of their own and publishing on a business-event topic of their own. Checks are pointed at them
through their RG_SHOP_* settings. The stack is only needed, and its helpers only imported, when a test asks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from releasegate_sdk import VerificationRequest
from releasegate_sdk.testing import fake_request

STACK_ERP = "http://127.0.0.1:18091"


@dataclass
class ShopOnStack:
    shop: Any  # tests.support.shop.Shop
    topic: str

    @property
    def env(self) -> dict[str, str]:
        """The settings that point a check at this shop."""
        return {
            "RG_SHOP_DATABASE_URL": self.shop.database,
            "RG_SHOP_ERP_URL": STACK_ERP,
            "RG_SHOP_EVENTS_TOPIC": self.topic,
        }

    async def storefront(self, version: str) -> Any:
        """A running production storefront of `version` (started on first use, stopped with the module). It leaves
        other versions' pending ERP exports alone for 60 s, so each version's exports stay its own."""
        name = f"verifiers-{version}"
        if name not in self.shop.storefronts:
            self.shop.storefronts[name] = self.shop.start(name, version, adopt_after_s=60)
        await self.shop.storefronts[name].wait_healthy()
        return self.shop.storefronts[name]

    async def orders(self, version: str, tenants: list[str], count: int, items: list[dict] | None = None) -> list[str]:
        """Place `count` orders through the `version` storefront, round-robin over `tenants`; their ids."""
        from tests.support.shop import BASKET, checkout

        shop, placed = await self.storefront(version), []
        for n in range(count):
            response = await checkout(shop, tenants[n % len(tenants)], items or BASKET)
            assert response.status_code == 201, response.text
            placed.append(response.json()["order_id"])
        return placed

    async def published(self, timeout: float = 30) -> None:
        """Wait until the storefronts' outbox relay has put every event staged so far on the topic: a checkout is
        answered when its transaction commits, and its events reach Kafka a moment later."""
        import asyncpg

        from tests.support.shop import wait_for

        connection = await asyncpg.connect(self.shop.database)
        try:

            async def drained() -> bool:
                return not await connection.fetchval(
                    "SELECT count(*) FROM event_outbox WHERE sent_at IS NULL AND refused IS NULL"
                )

            await wait_for(drained, timeout, "the storefronts' outbox to be published")
        finally:
            await connection.close()

    @staticmethod
    def request(version: str, since: datetime, stable: str | None = None) -> VerificationRequest:
        """A production request for `version` whose window ran from `since` until now."""
        seconds = (datetime.now(UTC) - since).total_seconds() + 0.2
        return fake_request(
            service="shop",
            environment="production",
            candidate_version=version,
            stable_version=stable,
            window_seconds=seconds,
        )


async def _topic(name: str, create: bool) -> None:
    """A business-event topic of the tests' own: the shop's instances may write it and the verifiers that read
    business events may read it, as for `shop.events` (deploy/kafka/acls.yaml)."""
    from releasegate_runtime import bus_admin
    from releasegate_runtime.bus import Grant
    from releasegate_runtime.settings import ServiceSettings

    settings = ServiceSettings()
    admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)
    if create:
        grants = [Grant("shop", "topic", name, False, "WRITE")] + [
            Grant(reader, "topic", name, False, "READ") for reader in ("verifier-inventory-latency", "ops")
        ]
        bus_admin.ensure_topics(admin, [name])
        bus_admin.reconcile_acls(admin, grants, prune=False)
    else:
        admin.delete_topics([name])[name].result(30)


@pytest.fixture(scope="module")
async def shop_on_stack(tmp_path_factory) -> AsyncIterator[ShopOnStack]:
    from shop.build_bundles import build_all
    from tests.support.shop import Erp, Shop, fresh_database, sandbox

    try:
        async with httpx.AsyncClient(timeout=2) as client:
            (await client.get(f"{STACK_ERP}/health")).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(f"the stack's ERP sandbox is not answering ({exc}): `bash deploy/stack.sh up`", pytrace=False)
    work, topic = tmp_path_factory.mktemp("shop-on-stack"), f"shop.events.verifiers-{uuid.uuid4().hex[:8]}"
    await _topic(topic, create=True)
    digests = build_all(work / "store")
    try:
        async with fresh_database() as database:
            payment = sandbox("shop.payment_sandbox", ["--decline-rate", "0"], work)
            shop = Shop(work, digests, database, topic, payment, Erp(SimpleNamespace(url=STACK_ERP)), {})
            try:
                await payment.wait_healthy()
                yield ShopOnStack(shop, topic)
            finally:
                codes = {p.name: p.terminate() for p in [payment, *shop.storefronts.values()]}
            assert set(codes.values()) == {0}, f"unclean shutdown: {codes}"
    finally:
        await _topic(topic, create=False)


@pytest.fixture
def shop_settings(shop_on_stack, monkeypatch) -> ShopOnStack:
    """The module's shop, with the checks pointed at it."""
    for name, value in shop_on_stack.env.items():
        monkeypatch.setenv(name, value)
    return shop_on_stack
