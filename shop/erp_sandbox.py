"""ERP sandbox for the sample shop: takes order exports under a strict contract and remembers what arrived.

`POST /orders` is idempotent on `order_id`, rate limited per tenant (429 with Retry-After) and can fail on
purpose (503) at a configured rate or on request (`POST /faults`), so the shop's exporter meets what a real ERP
does to it. `GET /orders` and `GET /rejections` let verifiers ask what arrived and what was refused.

`python -m shop.erp_sandbox --port 18091 [--fail-rate 0.05] [--latency-ms 1,5] [--rate-limit 50 --burst 100]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PORT = 18091  # the storefront's ERP_SANDBOX_URL defaults to http://127.0.0.1:18091
DEFAULT_FAIL_RATE = 0.0
DEFAULT_LATENCY_MS = (1.0, 5.0)
DEFAULT_RATE_LIMIT = 50.0  # orders per second and tenant
DEFAULT_BURST = 100
DEFAULT_MAX_ORDERS = 200_000
MAX_REJECTIONS = 10_000
ANY_TENANT = "*"


class OrderLine(BaseModel):
    """One basket line: what was sold, how many, at which unit price (tax handling per the order's region)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    sku: str = Field(min_length=1, max_length=64)
    qty: int = Field(gt=0, le=10_000)
    unit_cents: int = Field(ge=0)


class OrderExport(BaseModel):
    """A confirmed order as the ERP accepts it. Unknown fields are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    order_id: uuid.UUID
    tenant: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    region: str = Field(pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$", description="ISO 3166 country or subdivision.")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    amount_cents: int = Field(ge=0, description="What the customer paid, tax included.")
    tax_cents: int = Field(ge=0)
    lines: list[OrderLine] = Field(min_length=1, max_length=500)
    placed_at: AwareDatetime = Field(description="RFC 3339 with an offset.")

    @model_validator(mode="after")
    def _totals_agree(self) -> OrderExport:
        # Prices either include the tax (VAT) or get it added (sales tax); any other total is a broken export.
        subtotal = sum(line.qty * line.unit_cents for line in self.lines)
        if self.tax_cents > self.amount_cents:
            raise ValueError(f"tax_cents {self.tax_cents} exceeds amount_cents {self.amount_cents}")
        if self.amount_cents not in (subtotal, subtotal + self.tax_cents):
            raise ValueError(
                f"amount_cents {self.amount_cents} is neither the lines' subtotal {subtotal} (tax "
                f"included) nor subtotal + tax_cents {subtotal + self.tax_cents} (tax added)"
            )
        return self


def violations(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(order)", "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False)
    ]


def check(body: bytes) -> tuple[OrderExport | None, list[dict[str, str]]]:
    """The order, or the list of contract violations of a request body."""
    try:
        return OrderExport.model_validate_json(body), []
    except ValidationError as exc:
        return None, violations(exc)


class TokenBuckets:
    """Per-key token buckets: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float) -> float:
        """0 when a token was taken, else the seconds until the next one."""
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate


@dataclass
class Faults:
    """Failures to inject for one tenant (or every tenant): the next n requests fail or are throttled."""

    fail_next: int = 0
    throttle_next: int = 0
    retry_after_s: int = 1

    def as_dict(self) -> dict[str, int]:
        return {"fail_next": self.fail_next, "throttle_next": self.throttle_next, "retry_after_s": self.retry_after_s}


@dataclass
class Received:
    """An order as the ERP took it, when it first arrived, and how often it was sent."""

    order: dict[str, Any]
    received_at: float
    exporter: str | None
    attempts: int
    duplicates: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.order,
            "received_at": _rfc3339(self.received_at),
            "received_at_epoch": self.received_at,
            "attempts": self.attempts,
            "duplicates": self.duplicates,
            "exporter": self.exporter,
        }


@dataclass
class Ledger:
    """What the ERP received, in arrival order, bounded: the oldest orders are forgotten first."""

    max_orders: int = DEFAULT_MAX_ORDERS
    orders: OrderedDict[str, Received] = field(default_factory=OrderedDict)
    # Every POST naming an order id, including those refused with 429/503/422, so a record shows all attempts.
    attempts: OrderedDict[str, int] = field(default_factory=OrderedDict)
    rejections: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_REJECTIONS))
    stats: Counter[str] = field(default_factory=Counter)

    def attempt(self, order_id: str) -> None:
        count = self.attempts.pop(order_id, 0) + 1
        self.attempts[order_id] = count
        while len(self.attempts) > 2 * self.max_orders:
            self.attempts.popitem(last=False)
        if order_id in self.orders:
            self.orders[order_id].attempts = count

    def add(self, order_id: str, received: Received) -> None:
        self.orders[order_id] = received
        while len(self.orders) > self.max_orders:
            self.orders.popitem(last=False)


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def create_app(
    *,
    fail_rate: float = DEFAULT_FAIL_RATE,
    latency_ms: tuple[float, float] = DEFAULT_LATENCY_MS,
    rate_limit: float = DEFAULT_RATE_LIMIT,
    burst: int = DEFAULT_BURST,
    max_orders: int = DEFAULT_MAX_ORDERS,
    rng: random.Random | None = None,
    clock: Any = time.time,
) -> web.Application:
    rng = rng or random.Random()
    ledger, buckets = Ledger(max_orders=max_orders), TokenBuckets(rate_limit, burst)
    faults: dict[str, Faults] = {}
    settings = {"fail_rate": fail_rate}

    def answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
        ledger.stats[body["status"]] += 1
        return web.json_response(body, status=status, headers=headers)

    def reject(
        status: int, reason: str, tenant: Any, order_id: Any, exporter: str | None, found: list[dict[str, str]]
    ) -> web.Response:
        ledger.rejections.append(
            {
                "received_at": _rfc3339(clock()),
                "received_at_epoch": clock(),
                "reason": reason,
                "tenant": tenant if isinstance(tenant, str) else None,
                "order_id": order_id if isinstance(order_id, str) else None,
                "exporter": exporter,
                "violations": found,
            }
        )
        return answer(status, {"status": "rejected", "reason": reason, "violations": found})

    def injected(tenant: str) -> tuple[str | None, int]:
        """'fail' or 'throttle' when a fault is due for this request, with the Retry-After to send."""
        for key in (tenant, ANY_TENANT):
            f = faults.get(key)
            if f and f.throttle_next > 0:
                f.throttle_next -= 1
                return "throttle", f.retry_after_s
            if f and f.fail_next > 0:
                f.fail_next -= 1
                return "fail", 0
        return ("fail", 0) if rng.random() < settings["fail_rate"] else (None, 0)

    async def receive(request: web.Request) -> web.Response:
        raw = await request.read()
        exporter = request.headers.get("X-Exporter")
        await asyncio.sleep(rng.uniform(*latency_ms) / 1000)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return reject(
                422,
                "contract_violation",
                None,
                None,
                exporter,
                [{"field": "(body)", "message": "not a JSON object", "type": "json_invalid"}],
            )
        tenant, order_id = body.get("tenant"), body.get("order_id")
        if isinstance(order_id, str) and len(order_id) <= 64:
            ledger.attempt(order_id)
        key = tenant if isinstance(tenant, str) else "-"
        wait = buckets.take(key, time.monotonic())
        fault, retry_after = injected(key) if wait == 0 else ("throttle", math.ceil(wait))
        if fault == "throttle":
            retry_after = max(retry_after, 1)
            return answer(
                429,
                {"status": "throttled", "reason": "rate_limited", "retry_after_s": retry_after},
                {"Retry-After": str(retry_after)},
            )
        if fault == "fail":
            return answer(503, {"status": "unavailable", "reason": "transient_failure"})
        order, found = check(raw)
        if order is None:
            return reject(422, "contract_violation", tenant, order_id, exporter, found)
        oid, content = str(order.order_id), order.model_dump(mode="json")
        seen = ledger.orders.get(oid)
        if seen is not None:
            if seen.order != content:
                return reject(
                    409,
                    "conflict",
                    tenant,
                    oid,
                    exporter,
                    [{"field": "order_id", "message": "already received with different content", "type": "conflict"}],
                )
            seen.duplicates += 1
            return answer(200, {"status": "duplicate", "order_id": oid, "received_at": _rfc3339(seen.received_at)})
        received = Received(order=content, received_at=clock(), exporter=exporter, attempts=ledger.attempts.get(oid, 1))
        ledger.add(oid, received)
        return answer(201, {"status": "accepted", "order_id": oid, "received_at": _rfc3339(received.received_at)})

    def _since(request: web.Request) -> float:
        try:
            return float(request.query.get("since", "0"))
        except ValueError:
            raise web.HTTPBadRequest(
                text=json.dumps({"reason": "since must be epoch seconds"}), content_type="application/json"
            ) from None

    async def list_orders(request: web.Request) -> web.Response:
        since, tenant = _since(request), request.query.get("tenant")
        found = [
            r.as_dict()
            for r in ledger.orders.values()
            if r.received_at >= since and (tenant is None or r.order["tenant"] == tenant)
        ]
        return web.json_response({"orders": found})

    async def get_order(request: web.Request) -> web.Response:
        received = ledger.orders.get(request.match_info["id"].lower())
        if received is None:
            return web.json_response(
                {"reason": "order_not_found", "attempts": ledger.attempts.get(request.match_info["id"].lower(), 0)},
                status=404,
            )
        return web.json_response(received.as_dict())

    async def list_rejections(request: web.Request) -> web.Response:
        since, tenant = _since(request), request.query.get("tenant")
        found = [
            r
            for r in ledger.rejections
            if r["received_at_epoch"] >= since and (tenant is None or r["tenant"] == tenant)
        ]
        return web.json_response({"rejections": found})

    async def set_faults(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            tenant = str(body.get("tenant", ANY_TENANT))
            f = faults.setdefault(tenant, Faults())
            f.fail_next = int(body.get("fail_next", f.fail_next))
            f.throttle_next = int(body.get("throttle_next", f.throttle_next))
            f.retry_after_s = max(1, int(body.get("retry_after_s", f.retry_after_s)))
            if "fail_rate" in body:
                settings["fail_rate"] = float(body["fail_rate"])
        except (ValueError, TypeError, AttributeError):
            return web.json_response(
                {"reason": "expected {tenant?, fail_next?, throttle_next?, retry_after_s?, fail_rate?}"}, status=400
            )
        return web.json_response({"tenant": tenant, **f.as_dict(), "fail_rate": settings["fail_rate"]})

    async def health(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "orders": len(ledger.orders),
                "stats": dict(ledger.stats),
                "fail_rate": settings["fail_rate"],
            }
        )

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/orders", receive)
    app.router.add_get("/orders", list_orders)
    app.router.add_get("/orders/{id}", get_order)
    app.router.add_get("/rejections", list_rejections)
    app.router.add_post("/faults", set_faults)
    return app


def _latency(value: str) -> tuple[float, float]:
    low, _, high = value.partition(",")
    bounds = (float(low), float(high or low))
    if not 0 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError("expected MIN,MAX milliseconds with 0 <= MIN <= MAX")
    return bounds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shop.erp_sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=DEFAULT_FAIL_RATE,
        help="share of order exports answered 503 before they are looked at (default 0)",
    )
    parser.add_argument(
        "--latency-ms",
        type=_latency,
        default=DEFAULT_LATENCY_MS,
        help="MIN,MAX added to every export, uniformly drawn (default 1,5)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=DEFAULT_RATE_LIMIT,
        help="order exports per second and tenant before 429 (default 50)",
    )
    parser.add_argument("--burst", type=int, default=DEFAULT_BURST, help="exports a tenant may save up (default 100)")
    parser.add_argument(
        "--max-orders",
        type=int,
        default=DEFAULT_MAX_ORDERS,
        help="orders remembered; the oldest are forgotten first (default 200000)",
    )
    args = parser.parse_args(argv)
    web.run_app(
        create_app(
            fail_rate=args.fail_rate,
            latency_ms=args.latency_ms,
            rate_limit=args.rate_limit,
            burst=args.burst,
            max_orders=args.max_orders,
        ),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        shutdown_timeout=5,
    )


if __name__ == "__main__":
    main()
