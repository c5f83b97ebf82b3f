"""The shop database: schema, seed catalog and the queries of the storefront."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

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
"""

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
    amount_cents: int
    status: str


async def create_schema(pool: asyncpg.Pool) -> None:
    """Create tables and seed the catalog; idempotent and safe when several instances start at once."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        await conn.execute(SCHEMA)
        await conn.executemany(
            "INSERT INTO products (sku, name, price_cents, currency) VALUES ($1, $2, $3, 'USD') "
            "ON CONFLICT (sku) DO NOTHING", CATALOG)
        await conn.executemany(
            "INSERT INTO inventory (sku, quantity) VALUES ($1, $2) ON CONFLICT (sku) DO NOTHING",
            [(sku, SEED_STOCK) for sku, _, _ in CATALOG])


async def products(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT p.sku, p.name, p.price_cents, p.currency, i.quantity "
        "FROM products p JOIN inventory i USING (sku) ORDER BY p.sku")


async def create_cart(pool: asyncpg.Pool, tenant: str, items: list[dict[str, Any]]) -> str | None:
    """Store a cart; None when an item names an unknown sku."""
    skus = {item["sku"] for item in items}
    known = await pool.fetchval("SELECT count(*) FROM products WHERE sku = ANY($1::text[])", list(skus))
    if known != len(skus):
        return None
    cart_id = str(uuid.uuid4())
    await pool.execute("INSERT INTO carts (id, tenant, items) VALUES ($1, $2, $3)",
                       cart_id, tenant, json.dumps(items))
    return cart_id


async def load_cart(pool: asyncpg.Pool, tenant: str, cart_id: str) -> Cart | None:
    row = await pool.fetchrow("SELECT items, status FROM carts WHERE id = $1 AND tenant = $2", cart_id, tenant)
    if row is None:
        return None
    items = json.loads(row["items"])
    prices = dict(await pool.fetch("SELECT sku, price_cents FROM products WHERE sku = ANY($1::text[])",
                                   [item["sku"] for item in items]))
    amount = sum(prices[item["sku"]] * item["qty"] for item in items)
    return Cart(id=cart_id, items=items, amount_cents=amount, status=row["status"])


async def place_order(pool: asyncpg.Pool, *, tenant: str, email: str, cart: Cart, currency: str,
                      auth_code: str, version: str, environment: str) -> str:
    """Write customer, order, payment and the inventory decrement in one transaction; return the order id."""
    order_id = str(uuid.uuid4())
    async with pool.acquire() as conn, conn.transaction():
        customer_id = await conn.fetchval(
            "INSERT INTO customers (id, tenant, email) VALUES ($1, $2, $3) "
            "ON CONFLICT (tenant, email) DO UPDATE SET email = EXCLUDED.email RETURNING id",
            uuid.uuid4(), tenant, email)
        await conn.execute(
            "INSERT INTO orders (id, tenant, version, environment, customer_id, cart_id, amount_cents, currency,"
            " status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'confirmed')",
            order_id, tenant, version, environment, customer_id, cart.id, cart.amount_cents, currency)
        await conn.execute("INSERT INTO payments (order_id, auth_code, amount_cents) VALUES ($1, $2, $3)",
                           order_id, auth_code, cart.amount_cents)
        try:
            # Sorted so concurrent checkouts lock inventory rows in the same order and cannot deadlock.
            for item in sorted(cart.items, key=lambda i: i["sku"]):
                await conn.execute("UPDATE inventory SET quantity = quantity - $2 WHERE sku = $1",
                                   item["sku"], item["qty"])
        except asyncpg.CheckViolationError:
            raise OutOfStock() from None
        await conn.execute("UPDATE carts SET status = 'checked_out' WHERE id = $1", cart.id)
    return order_id


async def order(pool: asyncpg.Pool, tenant: str, order_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT o.id, o.status, o.amount_cents, o.currency, o.version, o.environment, o.created_at, p.auth_code "
        "FROM orders o LEFT JOIN payments p ON p.order_id = o.id WHERE o.id = $1 AND o.tenant = $2",
        order_id, tenant)
