"""The storefront's outbox on the local stack: an instance that cannot reach Kafka still confirms orders, and each
order's events reach `shop.events` later, as the very bytes staged in the order's transaction."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from contracts.cloudevents import header_dict
from shop.build_bundles import build_all
from shop.shopper import run_journey
from tests.support.shop import (
    REPO,
    SHOP_DB,
    SUCCESS_TYPES,
    VISA,
    Process,
    extract,
    free_port,
    shop_kafka_env,
    spawn,
    tenant,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def storefronts(tmp_path_factory, topic) -> AsyncIterator[dict[str, Process]]:
    """Two v1 storefronts on the stack's shop database: `cut-off`, whose Kafka is a port nobody listens on, and
    `connected`, with the real broker (so some instance can relay, whatever else runs on the stack)."""
    work = tmp_path_factory.mktemp("outbox")
    bundle = extract(work / "store", build_all(work / "store")["v1"], work / "v1")
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    sandbox_port = free_port()
    sandbox = spawn(
        "payment-sandbox",
        [sys.executable, "-m", "shop.payment_sandbox", "--port", str(sandbox_port), "--decline-rate", "0"],
        REPO,
        base_env,
        sandbox_port,
        work,
    )
    shops = {}
    for name, kafka in (("cut-off", {"SHOP_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}), ("connected", {})):
        port = free_port()
        env = (
            base_env
            | shop_kafka_env()
            | kafka
            | {
                "SHOP_PORT": str(port),
                "SHOP_ENVIRONMENT": "staging",
                "SHOP_INSTANCE_ID": f"it-{name}-{port}",
                "SHOP_DATABASE_URL": SHOP_DB,
                "SHOP_PAYMENT_URL": sandbox.url,
                "SHOP_EVENTS_TOPIC": topic,
            }
        )
        shops[name] = spawn(f"storefront-{name}", [sys.executable, "-m", "storefront"], bundle, env, port, work)
    try:
        # the cut-off instance gets ready too: serving needs the database only
        for process in [sandbox, *shops.values()]:
            await process.wait_healthy()
        yield shops
    finally:
        codes = {p.name: p.terminate() for p in [*shops.values(), sandbox] if p.popen.poll() is None}
    assert codes == {p.name: 0 for p in [*shops.values(), sandbox]}, f"unclean shutdown: {codes}"


async def test_an_order_confirmed_without_a_reachable_broker_reaches_the_topic_as_staged(storefronts, events):
    cut_off, who = storefronts["cut-off"], tenant()
    async with httpx.AsyncClient(timeout=10) as client:
        result = await run_journey(client, cut_off.url, who, VISA)
    assert result.success, result  # the checkout never waited for Kafka

    records = await events.for_tenant(who, len(SUCCESS_TYPES), timeout=60)
    assert [header_dict(r.headers)["ce_type"] for r in records] == SUCCESS_TYPES
    placed = json.loads(records[-1].value)
    assert placed["order_id"] == result.order_id
    assert placed["instance"].startswith("it-cut-off-"), "the events are the cut-off instance's own"

    conn = await asyncpg.connect(SHOP_DB)
    try:

        async def all_sent() -> bool:
            return not await conn.fetchval(
                "SELECT count(*) FROM event_outbox WHERE key = $1 AND sent_at IS NULL", who.encode()
            )

        await wait_for(all_sent, 30, "the relay to mark the tenant's events sent")
        staged = await conn.fetch(
            "SELECT value, header_names, header_values FROM event_outbox WHERE key = $1 ORDER BY id", who.encode()
        )
    finally:
        await conn.close()
    # byte for byte what the order's transaction staged: value and headers (ce_id, ce_time included)
    assert [
        (bytes(r["value"]), list(zip(r["header_names"], map(bytes, r["header_values"]), strict=True))) for r in staged
    ] == [(r.value, list(r.headers)) for r in records]
    # and the instance whose relay cannot reach Kafka is still up and serving
    assert cut_off.popen.poll() is None
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"{cut_off.url}/health")).status_code == 200
