"""The shop database: schema, seed catalog and the queries of the storefront."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from storefront import outbox

# Arbitrary but fixed: every storefront instance serialises schema creation on this key.
SCHEMA_LOCK_KEY = 472_911_305

SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    email text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, email)
);
CREATE TABLE IF NOT EXISTS products (
    sku text PRIMARY KEY,
    name text NOT NULL,
    price_cents integer NOT NULL CHECK (price_cents > 0),
    currency text NOT NULL
);
CREATE TABLE IF NOT EXISTS inventory (
    sku text PRIMARY KEY REFERENCES products (sku),
    quantity integer NOT NULL CHECK (quantity >= 0)
);
CREATE TABLE IF NOT EXISTS carts (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    items jsonb NOT NULL,
    status text NOT NULL DEFAULT 'open',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS orders (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    version text NOT NULL,
    environment text NOT NULL,
    customer_id uuid REFERENCES customers (id),
    cart_id uuid REFERENCES carts (id),
    amount_cents integer NOT NULL,
    currency text NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS payments (
    order_id uuid PRIMARY KEY REFERENCES orders (id),
    auth_code text NOT NULL,
    amount_cents integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_tenant_created ON orders (tenant, created_at);
CREATE TABLE IF NOT EXISTS inventory_reservations (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    cart_id uuid NOT NULL,
    items jsonb NOT NULL,
    status text NOT NULL DEFAULT 'reserved' CHECK (status IN ('reserved', 'confirmed', 'released')),
    order_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    settled_at timestamptz
);
CREATE INDEX IF NOT EXISTS inventory_reservations_open ON inventory_reservations (created_at)
    WHERE status = 'reserved';
-- One row per order, written in the transaction that places the order, so the export state is never ahead
-- of the orders table; exported_at is set only once the ERP has accepted the order. `version` placed the order,
-- `refused_by` is the last version whose document the ERP refused (it leaves the order to other versions).
CREATE TABLE IF NOT EXISTS erp_exports (
    order_id uuid PRIMARY KEY REFERENCES orders (id),
    tenant text NOT NULL,
    version text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    refused_by text,
    exported_at timestamptz,
    exported_by text
);
CREATE INDEX IF NOT EXISTS erp_exports_due ON erp_exports (next_attempt_at) WHERE exported_at IS NULL;
-- The storefront's business events, each written in the transaction of the change it describes (order.placed in
-- the order's own) and published by the outbox relay (storefront/outbox.py), which sets sent_at only once the
-- broker acknowledged the record; `refused` says why the broker will never take one. Records are kept as sent.
CREATE TABLE IF NOT EXISTS event_outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key bytea,
    value bytea NOT NULL,
    header_names text[] NOT NULL,
    header_values bytea[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    refused text
);
CREATE INDEX IF NOT EXISTS event_outbox_pending ON event_outbox (id) WHERE sent_at IS NULL AND refused IS NULL;
"""
# Columns added after their table was first created; existing databases get them when an instance starts.
ADDED_COLUMNS = {
    "orders": {"tax_cents": "integer", "region": "text", "lines": "jsonb"},
    "erp_exports": {"refused_by": "text"},
}

CATALOG = [
    ("TEE-001", "Organic cotton tee", 1900),
    ("HOOD-002", "Zip hoodie", 5900),
    ("CAP-003", "Baseball cap", 2400),
    ("MUG-004", "Enamel mug", 1200),
    ("BAG-005", "Canvas tote bag", 1800),
    ("SNK-006", "Canvas sneakers", 7900),
    ("SOCK-007", "Merino socks (3 pack)", 2100),
    ("JKT-008", "Rain jacket", 12900),
]
SEED_STOCK = 1_000_000


class OutOfStock(Exception):
    """A checkout would take an inventory below zero."""


@dataclass(frozen=True)
class Cart:
    id: str
    items: list[dict[str, Any]]
    lines: list[dict[str, Any]]  # items with their current unit price: sku, qty, unit_cents
    status: str


@dataclass(frozen=True)
class PlacedOrder:
    id: str
    placed_at: datetime


async def create_schema(pool: asyncpg.Pool) -> None:
    """Create tables and seed the catalog; idempotent and safe when several instances start at once."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        # Upgrading a live database locks tables checkouts use: give up (and retry the start) rather than queue
        # behind them for long and stall every checkout queued behind us.
        await conn.execute("SET LOCAL lock_timeout = '5s'")
        await conn.execute(SCHEMA)
        present = {
            (r["table_name"], r["column_name"])
            for r in await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name = ANY($1::text[])",
                list(ADDED_COLUMNS),
            )
        }
        for table, columns in ADDED_COLUMNS.items():
            for column, type_ in columns.items():
                if (table, column) not in present:
                    # ALTER TABLE locks the table exclusively even when the column exists: only when it is missing.
                    await conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {type_}")
        await conn.executemany(
            "INSERT INTO products (sku, name, price_cents, currency) VALUES ($1, $2, $3, 'USD') "
            "ON CONFLICT (sku) DO NOTHING",
            CATALOG,
        )
        await conn.executemany(
            "INSERT INTO inventory (sku, quantity) VALUES ($1, $2) ON CONFLICT (sku) DO NOTHING",
            [(sku, SEED_STOCK) for sku, _, _ in CATALOG],
        )


async def products(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT p.sku, p.name, p.price_cents, p.currency, i.quantity "
        "FROM products p JOIN inventory i USING (sku) ORDER BY p.sku"
    )


async def create_cart(pool: asyncpg.Pool, tenant: str, items: list[dict[str, Any]]) -> str | None:
    """Store a cart; None when an item names an unknown sku."""
    skus = {item["sku"] for item in items}
    known = await pool.fetchval("SELECT count(*) FROM products WHERE sku = ANY($1::text[])", list(skus))
    if known != len(skus):
        return None
    cart_id = str(uuid.uuid4())
    await pool.execute("INSERT INTO carts (id, tenant, items) VALUES ($1, $2, $3)", cart_id, tenant, json.dumps(items))
    return cart_id


async def load_cart(pool: asyncpg.Pool, tenant: str, cart_id: str) -> Cart | None:
    row = await pool.fetchrow("SELECT items, status FROM carts WHERE id = $1 AND tenant = $2", cart_id, tenant)
    if row is None:
        return None
    items = json.loads(row["items"])
    prices = dict(
        await pool.fetch(
            "SELECT sku, price_cents FROM products WHERE sku = ANY($1::text[])", [item["sku"] for item in items]
        )
    )
    lines = [{"sku": item["sku"], "qty": item["qty"], "unit_cents": prices[item["sku"]]} for item in items]
    return Cart(id=cart_id, items=items, lines=lines, status=row["status"])


async def _adjust_stock(conn: asyncpg.Connection, items: list[dict[str, Any]], sign: int) -> None:
    """Take (sign -1) or return (sign +1) stock; OutOfStock when it would go below zero."""
    qty: dict[str, int] = {}
    for item in items:
        qty[item["sku"]] = qty.get(item["sku"], 0) + item["qty"]
    try:
        # Sorted so concurrent transactions lock inventory rows in the same order and cannot deadlock.
        for sku in sorted(qty):
            await conn.execute("UPDATE inventory SET quantity = quantity + $2 WHERE sku = $1", sku, sign * qty[sku])
    except asyncpg.CheckViolationError:
        raise OutOfStock() from None


async def reserve(pool: asyncpg.Pool, tenant: str, cart: Cart) -> str:
    """Hold the cart's items out of stock for a checkout; return the reservation id."""
    reservation_id = str(uuid.uuid4())
    async with pool.acquire() as conn, conn.transaction():
        await _adjust_stock(conn, cart.items, -1)
        await conn.execute(
            "INSERT INTO inventory_reservations (id, tenant, cart_id, items) VALUES ($1, $2, $3, $4)",
            reservation_id,
            tenant,
            cart.id,
            json.dumps(cart.items),
        )
    return reservation_id


async def release(pool: asyncpg.Pool, reservation_id: str) -> None:
    """Put a reservation's stock back; a no-op once it is confirmed or released."""
    async with pool.acquire() as conn, conn.transaction():
        items = await conn.fetchval(
            "UPDATE inventory_reservations SET status = 'released', settled_at = now()"
            " WHERE id = $1 AND status = 'reserved' RETURNING items",
            reservation_id,
        )
        if items is not None:
            await _adjust_stock(conn, json.loads(items), +1)


async def release_expired(pool: asyncpg.Pool, older_than_s: float, limit: int = 500) -> int:
    """Release reservations no checkout confirmed in time (the instance died mid-checkout); return how many."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "UPDATE inventory_reservations SET status = 'released', settled_at = now() WHERE id IN ("
            " SELECT id FROM inventory_reservations WHERE status = 'reserved'"
            " AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2"
            " FOR UPDATE SKIP LOCKED) RETURNING items",
            float(older_than_s),
            limit,
        )
        await _adjust_stock(conn, [item for row in rows for item in json.loads(row["items"])], +1)
    return len(rows)


async def place_order(
    pool: asyncpg.Pool,
    *,
    tenant: str,
    email: str,
    cart: Cart,
    reservation_id: str,
    region: str,
    tax_cents: int,
    amount_cents: int,
    currency: str,
    auth_code: str,
    version: str,
    environment: str,
    events: Callable[[PlacedOrder], Sequence[outbox.OutgoingEvent]],
) -> PlacedOrder:
    """Write customer, order, payment, the reservation's confirmation, the order's pending ERP export and the
    order's business events (`events` of the placed order) in one transaction: no order without its events."""
    order_id = str(uuid.uuid4())
    async with pool.acquire() as conn, conn.transaction():
        customer_id = await conn.fetchval(
            "INSERT INTO customers (id, tenant, email) VALUES ($1, $2, $3) "
            "ON CONFLICT (tenant, email) DO UPDATE SET email = EXCLUDED.email RETURNING id",
            uuid.uuid4(),
            tenant,
            email,
        )
        placed_at = await conn.fetchval(
            "INSERT INTO orders (id, tenant, version, environment, customer_id, cart_id, amount_cents, currency,"
            " status, tax_cents, region, lines) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'confirmed', $9, $10, $11)"
            " RETURNING created_at",
            order_id,
            tenant,
            version,
            environment,
            customer_id,
            cart.id,
            amount_cents,
            currency,
            tax_cents,
            region,
            json.dumps(cart.lines),
        )
        await conn.execute(
            "INSERT INTO payments (order_id, auth_code, amount_cents) VALUES ($1, $2, $3)",
            order_id,
            auth_code,
            amount_cents,
        )
        confirmed = await conn.fetchval(
            "UPDATE inventory_reservations SET status = 'confirmed', settled_at = now(), order_id = $2"
            " WHERE id = $1 AND status = 'reserved' RETURNING id",
            reservation_id,
            order_id,
        )
        if confirmed is None:
            # The reservation expired and its stock went back meanwhile: take the stock again, if it is there.
            await _adjust_stock(conn, cart.items, -1)
        await conn.execute("UPDATE carts SET status = 'checked_out' WHERE id = $1", cart.id)
        await conn.execute(
            "INSERT INTO erp_exports (order_id, tenant, version) VALUES ($1, $2, $3)", order_id, tenant, version
        )
        placed = PlacedOrder(id=order_id, placed_at=placed_at)
        await outbox.add(conn, events(placed))
    return placed


async def order(pool: asyncpg.Pool, tenant: str, order_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT o.id, o.status, o.amount_cents, o.currency, o.version, o.environment, o.created_at, o.tax_cents,"
        " o.region, p.auth_code FROM orders o LEFT JOIN payments p ON p.order_id = o.id"
        " WHERE o.id = $1 AND o.tenant = $2",
        order_id,
        tenant,
    )
