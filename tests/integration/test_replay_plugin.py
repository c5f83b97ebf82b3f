"""Data replay through the plugin the catalog names, on the local stack: the shop's replayer (catalog/shop.yaml
`dr.replayer`) re-applies order events read from the real `shop.events` (as the rollback principal, with the source
check and the retention proof) to a real restored scratch database exactly once, and a replayer the catalog does
not allow is refused before anything is imported or written."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from contracts.cloudevents import Envelope, encode
from contracts.events import OrderPlaced
from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_platform.pgtools import postgres
from releasegate_platform.pgtools.dumps import PgTools
from releasegate_platform.replay import EventLog, ReplayerRefused, load_replayer, replay
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings
from shop.replay import ShopReplayer
from tests.support.shop import REPO, TOPIC, db_url

pytestmark = pytest.mark.integration


async def _drop(admin: asyncpg.Connection, name: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            return
        except asyncpg.ObjectInUseError:  # an autovacuum worker may still be in it for a moment
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.fixture
async def restored() -> AsyncIterator[str]:
    """A scratch database restored from a real pg_dump of the shop's database, dropped afterwards."""
    settings = ServiceSettings()
    tools = PgTools(settings.database_url, settings.run_dir)
    dump = await tools.dump("shop")
    name = f"replay_it_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(db_url("releasegate"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            await tools.restore(name, tools.verified_file(dump.path, dump.sha256), clean=False)
            yield name
        finally:
            await _drop(admin, name)
    finally:
        await admin.close()
        dump.path.unlink(missing_ok=True)


async def _publish(records: list[tuple[OrderPlaced, str]]) -> None:
    """As the shop principal, the way a storefront relays its outbox."""
    producer = AIOKafkaProducer(**client_options(ServiceSettings(principal="shop")), acks="all")
    await producer.start()
    try:
        for event, source in records:
            key, value, headers = encode(Envelope.new(event, source))
            await producer.send_and_wait(TOPIC, value, key=key, headers=headers)
    finally:
        await producer.stop()


def _order(environment: str, sku: str, **changes) -> OrderPlaced:
    fields = {
        "version": "v1",
        "environment": environment,
        "tenant": "acme",
        "instance": f"{environment}-a-v1",
        "checkout_id": uuid.uuid4().hex,
        "order_id": str(uuid.uuid4()),
        "amount_cents": 1900,
        "currency": "USD",
        "items": [{"sku": sku, "qty": 1}],
        "customer": f"replay-{uuid.uuid4().hex[:8]}@acme.test",
        "payment_ref": f"auth-{uuid.uuid4().hex[:8]}",
        "placed_at": datetime.now(UTC),
    }
    return OrderPlaced(**(fields | changes))


async def _state(conn: asyncpg.Connection, ids: list[uuid.UUID], sku: str) -> tuple:
    return (
        await conn.fetchval("SELECT count(*) FROM orders WHERE id = ANY($1::uuid[])", ids),
        await conn.fetchval("SELECT count(*) FROM payments WHERE order_id = ANY($1::uuid[])", ids),
        await conn.fetchval("SELECT count(*) FROM customers"),
        await conn.fetchval("SELECT count(*) FROM carts"),
        await conn.fetchval("SELECT quantity FROM inventory WHERE sku = $1", sku),
    )


async def test_the_catalogs_replayer_reapplies_recorded_orders_to_a_restored_database_exactly_once(restored):
    settings = ServiceSettings()
    replayer = load_replayer(Catalog(REPO / "catalog").get("shop"))
    assert isinstance(replayer, ShopReplayer)
    conn = await postgres.connect(settings.database_url, restored)
    try:
        sku = await conn.fetchval("SELECT sku FROM inventory WHERE quantity >= 10 ORDER BY sku LIMIT 1")
        assert sku is not None, "the shop database has no stock to replay orders against"
        # an environment of this test's own: other tests' orders on the shared topic are not this replay's
        environment = f"replay-it-{uuid.uuid4().hex[:8]}"
        since = datetime.now(UTC) - timedelta(seconds=1)
        orders = [_order(environment, sku) for _ in range(3)]
        forged = _order(environment, sku)
        await _publish(
            [(o, f"shop/{environment}/{environment}-a-v1") for o in orders]
            + [(forged, f"attacker/{environment}/x")]
            + [(_order(f"{environment}-other", sku), f"shop/{environment}-other/{environment}-other-a-v1")]
        )
        ids = [uuid.UUID(o.order_id) for o in orders]
        before = await _state(conn, ids, sku)
        log = EventLog(ServiceSettings(principal="rollback"), TOPIC)
        assert (await log.check_replayable(since))["partitions"] >= 1

        scan = await log.events_since(replayer, "shop", environment, since)
        # every partition is read; orders placed within the same instant have no order between partitions
        assert sorted(e.order_id for e in scan.events) == sorted(o.order_id for o in orders)
        assert any("attacker" in i["reason"] for i in scan.invalid.entries), "the forged order was not refused"
        first = await replay(replayer, conn, scan)
        assert sorted(first.replayed) == sorted(o.order_id for o in orders) and first.already_present == 0
        assert first.not_replayable.total == 0
        after = await _state(conn, ids, sku)
        assert after[:2] == (3, 3) and after[4] == before[4] - 3
        assert after[2] == before[2] + 3 and after[3] == before[3] + 3

        again = await replay(replayer, conn, await log.events_since(replayer, "shop", environment, since))
        assert again.replayed == [] and again.already_present == 3
        assert await _state(conn, ids, sku) == after, "replaying twice changed the restored database"
    finally:
        await conn.close()


async def test_a_replayer_the_catalog_does_not_allow_is_refused(tmp_path):
    text = (REPO / "catalog" / "shop.yaml").read_text()
    line = "  replayer: shop.replay:ShopReplayer"
    assert line in text
    for target in ("os:system", "services.rollback.adapters:PgServiceDatabase", "shop_evil.replay:ShopReplayer"):
        (tmp_path / "shop.yaml").write_text(text.replace(line, f"  replayer: {target}"))
        with pytest.raises(CatalogError, match="outside the service's own package 'shop'"):
            Catalog(tmp_path).get("shop")
    # an entry that never went through the catalog's validation is refused when the replayer is loaded
    entry = Catalog(REPO / "catalog").get("shop")
    forged = entry.model_copy(update={"dr": entry.dr.model_copy(update={"replayer": "os:system"})})
    with pytest.raises(ReplayerRefused, match="not a `module:Class` in the service's own package 'shop'; refused"):
        load_replayer(forged)
