"""HTTP API of the storefront: health, metrics, catalog, prices, cart, checkout and order confirmation. The catalog
and the price pages are the same for every tenant and say so to the edge cache (deploy/varnish): Cache-Control
public plus the surrogate keys a release names when it changes them (`content`, `price`, `product:<sku>`)."""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any

import asyncpg
from aiohttp import web

from storefront import catalog, db, gateway, tax
from storefront.events import (
    CHECKOUT_ATTEMPTED,
    CHECKOUT_FAILED,
    CHECKOUT_SUCCEEDED,
    INVENTORY_CONFIRMED,
    INVENTORY_RESERVED,
    ORDER_PLACED,
    PAYMENT_AUTHORIZED,
    PAYMENT_DECLINED,
    Checkout,
)
from storefront.metrics import Metrics
from storefront.outbox import OutgoingEvent
from storefront.runtime import Runtime, lifecycle
from storefront.settings import Settings
from storefront.tenancy import HOST_SUFFIX, tenant_from_host

RUNTIME = web.AppKey("runtime", Runtime)
METRICS = web.AppKey("metrics", Metrics)
CURRENCY = re.compile(r"^[A-Z]{3}$")
ALWAYS_SERVED = {"/health", "/metrics"}
MAX_ITEMS, MAX_QTY = 50, 100
EDGE_MAX_AGE = 300  # seconds the edge may keep a catalog or price page; releases purge what they change
SKU = re.compile(r"^[A-Za-z0-9-]{1,32}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(settings: Settings) -> web.Application:
    runtime, metrics = Runtime(settings), Metrics(settings.version)
    app = web.Application(middlewares=[metrics.middleware(), _require_ready])
    app[RUNTIME], app[METRICS] = runtime, metrics
    app.cleanup_ctx.append(lambda _: lifecycle(runtime))
    app.on_response_prepare.append(_stamp_version)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics.handle)
    app.router.add_get("/products", products)
    app.router.add_get("/prices/{sku}", price)
    app.router.add_post("/cart", create_cart)
    app.router.add_post("/checkout", checkout)
    app.router.add_get("/orders/{id}", get_order)
    return app


async def _stamp_version(request: web.Request, response: web.StreamResponse) -> None:
    settings = request.app[RUNTIME].settings
    response.headers["X-Shop-Version"] = settings.version
    response.headers["X-Shop-Instance"] = settings.instance


@web.middleware
async def _require_ready(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path not in ALWAYS_SERVED and not request.app[RUNTIME].ready.is_set():
        return _error(503, "starting")
    return await handler(request)


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"reason": reason}, status=status)


def tenant_of(request: web.Request) -> str | None:
    """The tenant the request's one Host header names (`<tenant>.shop.test`, storefront/tenancy.py, the rule
    HAProxy routes and logs by); None without exactly one such header. `X-Tenant` is never read: a client can send
    any. (Not `request.host`: without a Host header it falls back to this machine's name.)"""
    hosts = request.headers.getall("Host", [])
    return tenant_from_host(hosts[0]) if len(hosts) == 1 else None


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _uuid(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


async def health(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    s = runtime.settings
    ready = runtime.ready.is_set()
    return web.json_response(
        {
            "status": "ok" if ready else "starting",
            "version": s.version,
            "environment": s.environment,
            "instance": s.instance,
        },
        status=200 if ready else 503,
    )


def _cacheable(response: web.Response, keys: list[str]) -> web.Response:
    response.headers["Cache-Control"] = f"public, max-age={EDGE_MAX_AGE}"
    response.headers["Surrogate-Key"] = " ".join(keys)
    return response


async def products(request: web.Request) -> web.Response:
    shown = [catalog.present(row) for row in await db.products(request.app[RUNTIME].pool)]
    keys = ["content", "price", *(f"product:{p['sku']}" for p in shown)]
    return _cacheable(web.json_response({"products": shown}), keys)


async def price(request: web.Request) -> web.Response:
    """One product's price as shoppers see it (the catalog's presentation of it): the edge's price page."""
    sku = request.match_info["sku"]
    if not SKU.match(sku):
        return _error(400, "invalid_sku")
    row = next((r for r in await db.products(request.app[RUNTIME].pool) if r["sku"] == sku), None)
    if row is None:
        return _error(404, "unknown_sku")
    shown = catalog.present(row)
    body = {"sku": sku, "price_cents": shown["price_cents"], "currency": shown["currency"]}
    return _cacheable(web.json_response(body), ["price", f"product:{sku}"])


async def create_cart(request: web.Request) -> web.Response:
    tenant, body = tenant_of(request), await _body(request)
    if tenant is None:
        return _error(400, "invalid_tenant")
    items = body.get("items") if body else None
    if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS or not all(map(_valid_item, items)):
        return _error(400, "invalid_items")
    items = [{"sku": item["sku"], "qty": item["qty"]} for item in items]
    cart_id = await db.create_cart(request.app[RUNTIME].pool, tenant, items)
    if cart_id is None:
        return _error(400, "unknown_sku")
    return web.json_response({"cart_id": cart_id, "items": items}, status=201)


def _valid_item(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("sku"), str)
        and type(item.get("qty")) is int
        and 0 < item["qty"] <= MAX_QTY
    )


async def checkout(request: web.Request) -> web.Response:
    started = time.perf_counter()
    runtime, metrics = request.app[RUNTIME], request.app[METRICS]
    s, publisher = runtime.settings, runtime.publisher
    tenant, body = tenant_of(request), await _body(request)
    if tenant is None:
        return _error(400, "invalid_tenant")
    if body is None:
        return _error(400, "invalid_body")
    cart_id, card, currency = _uuid(body.get("cart_id")), body.get("card_number"), body.get("currency", "USD")
    if cart_id is None or not isinstance(card, str) or not isinstance(currency, str) or not CURRENCY.match(currency):
        return _error(400, "invalid_checkout")
    cart = await db.load_cart(runtime.pool, tenant, cart_id)
    if cart is None:
        return _error(404, "cart_not_found")
    if cart.status != "open":
        return _error(409, "cart_checked_out")

    order_tax = tax.compute(cart.lines, tax.region_for(tenant))
    attempt = Checkout(
        tenant=tenant, checkout_id=str(uuid.uuid4()), amount_cents=order_tax.total_cents, currency=currency
    )
    items = [{"sku": item["sku"], "qty": item["qty"]} for item in cart.items]

    def elapsed_ms() -> float:
        return (time.perf_counter() - started) * 1000

    async def fail(status: int, reason: str, outcome: str = "failed") -> web.Response:
        await publisher.publish(CHECKOUT_FAILED, attempt, latency_ms=elapsed_ms(), reason=reason)
        metrics.checkout(outcome)
        return web.json_response({"reason": reason, "checkout_id": attempt.checkout_id}, status=status)

    async def release_and_fail(reservation_id: str, status: int, reason: str, outcome: str = "failed") -> web.Response:
        try:
            await db.release(runtime.pool, reservation_id)
        except (asyncpg.PostgresError, OSError):
            pass  # the reaper puts the stock back once the reservation expires
        return await fail(status, reason, outcome)

    await publisher.publish(CHECKOUT_ATTEMPTED, attempt, latency_ms=elapsed_ms())
    try:
        reservation_id = await db.reserve(runtime.pool, tenant, cart)
    except db.OutOfStock:
        return await fail(409, "out_of_stock")
    except (asyncpg.PostgresError, OSError):
        return await fail(500, "reservation_failed")
    reserved_at = time.perf_counter()
    await publisher.publish(INVENTORY_RESERVED, attempt, latency_ms=elapsed_ms(), items=items)
    try:
        auth = await gateway.authorize(
            runtime.session,
            s.payment_url,
            card_number=card,
            amount_cents=order_tax.total_cents,
            currency=currency,
            tenant=tenant,
        )
    except gateway.PaymentUnavailable:
        return await release_and_fail(reservation_id, 502, "payment_unavailable")
    if not auth.approved:
        await publisher.publish(PAYMENT_DECLINED, attempt, latency_ms=elapsed_ms(), reason=auth.reason)
        return await release_and_fail(reservation_id, 402, auth.reason, outcome="declined")
    await publisher.publish(PAYMENT_AUTHORIZED, attempt, latency_ms=elapsed_ms())

    email = body.get("email") if isinstance(body.get("email"), str) else f"guest@{tenant}{HOST_SUFFIX}"

    def order_events(placed: db.PlacedOrder) -> list[OutgoingEvent]:
        """The order's events, staged in the order's own transaction: a confirmed order always has them."""
        ordered = dataclasses.replace(attempt, order_id=placed.id)
        return [
            publisher.build(
                INVENTORY_CONFIRMED, ordered, latency_ms=(time.perf_counter() - reserved_at) * 1000, items=items
            ),
            publisher.build(CHECKOUT_SUCCEEDED, ordered, latency_ms=elapsed_ms()),
            publisher.build(
                ORDER_PLACED,
                ordered,
                latency_ms=elapsed_ms(),
                items=cart.lines,
                customer=email,
                payment_ref=auth.auth_code,
                tax_cents=order_tax.tax_cents,
                region=order_tax.region,
                placed_at=placed.placed_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            ),
        ]

    try:
        placed = await db.place_order(
            runtime.pool,
            tenant=tenant,
            email=email,
            cart=cart,
            reservation_id=reservation_id,
            region=order_tax.region,
            tax_cents=order_tax.tax_cents,
            amount_cents=order_tax.total_cents,
            currency=currency,
            auth_code=auth.auth_code,
            version=s.version,
            environment=s.environment,
            events=order_events,
        )
    except db.OutOfStock:
        return await fail(409, "out_of_stock")
    except (asyncpg.PostgresError, OSError):
        return await release_and_fail(reservation_id, 500, "order_failed")
    metrics.checkout("succeeded")
    return web.json_response(
        {
            "order_id": placed.id,
            "status": "confirmed",
            "checkout_id": attempt.checkout_id,
            "amount_cents": order_tax.total_cents,
            "tax_cents": order_tax.tax_cents,
            "region": order_tax.region,
            "currency": currency,
        },
        status=201,
    )


async def get_order(request: web.Request) -> web.Response:
    tenant, order_id = tenant_of(request), _uuid(request.match_info["id"])
    if tenant is None:
        return _error(400, "invalid_tenant")
    row = await db.order(request.app[RUNTIME].pool, tenant, order_id) if order_id else None
    if row is None:
        return _error(404, "order_not_found")
    return web.json_response(
        {
            "order_id": str(row["id"]),
            "status": row["status"],
            "amount_cents": row["amount_cents"],
            "currency": row["currency"],
            "version": row["version"],
            "environment": row["environment"],
            "auth_code": row["auth_code"],
            "created_at": row["created_at"].isoformat(),
            "tax_cents": row["tax_cents"],
            "region": row["region"],
        }
    )
