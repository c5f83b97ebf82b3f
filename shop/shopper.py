"""Synthetic shopper: runs browse → cart → checkout → confirmation journeys against the storefront.

Each journey names its tenant the only way the shop accepts, by the host it asks for (`Host: <tenant>.shop.test`).
With `--ledger PATH` the shopper appends one JSON line per order it saw confirmed (a 2xx checkout with an order id),
flushed at once: an account of confirmed orders kept by the customer's side, so tests can check the shop's database
against it instead of against the shop's own events. Answers of maintenance mode (HAProxy's 503 while a data restore
runs) are counted, and logged to the ledger, apart from errors.

`python -m shop.shopper --target http://127.0.0.1:18080 --rate 20 --tenants acme,globex,initech
 --cards mixed|visa --duration 0 [--stats-file PATH] [--ledger PATH]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

TEST_CARDS: dict[str, list[str]] = {
    "visa": ["4111111111111111", "4242424242424242", "4012888888881881"],
    "mastercard": ["5555555555554444", "5105105105105100", "2223003122003222"],
    "amex": ["378282246310005", "371449635398431", "340000000000009"],
}
CARD_MIXES: dict[str, dict[str, float]] = {
    "mixed": {"visa": 0.5, "mastercard": 0.3, "amex": 0.2},
    "visa": {"visa": 1.0},
}
# The storefront's tenant rule (shop/bundle_src/storefront/tenancy.py): `<tenant>.shop.test` names the tenant.
HOST_SUFFIX = ".shop.test"
TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MAINTENANCE = "maintenance"  # the reason HAProxy answers with while the shop is in maintenance mode


def tenant_host(tenant: str) -> str:
    """The Host header that names `tenant`; ValueError for a name the shop could not resolve."""
    if not TENANT.fullmatch(tenant):
        raise ValueError(f"tenant {tenant!r} is not a tenant name (lower-case letters, digits and '-', at most 32)")
    return tenant + HOST_SUFFIX


class Ledger:
    """Append-only JSON lines, one per order seen confirmed (`kind: order`) or per maintenance answer
    (`kind: maintenance`); each line is flushed as it is written, so a killed shopper loses none it wrote."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8")

    def order(
        self, *, order_id: str, tenant: str, amount_cents: int | None, version: str | None, requested_at: datetime
    ) -> None:
        self._write(
            {"kind": "order", "order_id": order_id, "tenant": tenant, "amount_cents": amount_cents, "version": version},
            requested_at,
        )

    def maintenance(self, *, tenant: str, step: str, requested_at: datetime) -> None:
        self._write({"kind": MAINTENANCE, "tenant": tenant, "step": step}, requested_at)

    def _write(self, entry: dict[str, Any], requested_at: datetime) -> None:
        # when the request went out and when its answer came back: together they bound when the shop decided
        entry["requested_at"], entry["at"] = requested_at.isoformat(), datetime.now(UTC).isoformat()
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a ledger (a line still being written when read is left for the next read)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines[:-1] if line]


def pick_card(mix: str, rng: random.Random) -> tuple[str, str]:
    """A (brand, card number) drawn from the named card mix."""
    weights = CARD_MIXES[mix]
    chosen = rng.choices(list(weights), weights=list(weights.values()))[0]
    return chosen, rng.choice(TEST_CARDS[chosen])


@dataclass
class Step:
    name: str
    status: int | None
    latency_ms: float
    version: str | None
    error: str | None = None
    sent_at: datetime | None = None


@dataclass
class JourneyResult:
    tenant: str
    success: bool = False
    version: str | None = None
    instance: str | None = None
    order_id: str | None = None
    reason: str | None = None
    maintenance: bool = False  # ended by a maintenance answer, not by an error
    steps: list[Step] = field(default_factory=list)


async def run_journey(
    client: httpx.AsyncClient,
    base_url: str,
    tenant: str,
    card: str,
    rng: random.Random | None = None,
    *,
    ledger: Ledger | None = None,
) -> JourneyResult:
    """One shopper's journey; never raises on HTTP or transport errors, they end up in the result. A confirmed
    order, and a maintenance answer, go to `ledger` the moment they are seen."""
    rng = rng or random.Random()
    base_url = base_url.rstrip("/")
    result = JourneyResult(tenant=tenant)
    headers = {"Host": tenant_host(tenant)}

    async def step(name: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        started, sent_at = time.perf_counter(), datetime.now(UTC)
        try:
            response = await client.request(method, base_url + path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            result.steps.append(
                Step(name, None, (time.perf_counter() - started) * 1000, None, str(exc) or type(exc).__name__, sent_at)
            )
            result.reason = f"{name}: {type(exc).__name__}"
            return None
        latency = (time.perf_counter() - started) * 1000
        version = response.headers.get("X-Shop-Version")
        result.steps.append(Step(name, response.status_code, latency, version, sent_at=sent_at))
        # The checkout step decides which version a journey is attributed to; earlier steps fill in meanwhile.
        if version and (name == "checkout" or result.version is None):
            result.version, result.instance = version, response.headers.get("X-Shop-Instance")
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not response.is_success:
            reason = payload.get("reason") if isinstance(payload, dict) else None
            result.reason = f"{name}: {reason or response.status_code}"
            if response.status_code == 503 and reason == MAINTENANCE:
                result.maintenance = True
                if ledger is not None:
                    ledger.maintenance(tenant=tenant, step=name, requested_at=sent_at)
            return None
        return payload

    catalog = await step("browse", "GET", "/products")
    products = catalog.get("products") if isinstance(catalog, dict) else None
    if not products:
        result.reason = result.reason or "browse: empty catalog"
        return result
    picked = rng.sample(products, k=min(len(products), rng.randint(1, 3)))
    cart = await step("cart", "POST", "/cart", {"items": [{"sku": p["sku"], "qty": rng.randint(1, 2)} for p in picked]})
    if not cart:
        return result
    order = await step(
        "checkout", "POST", "/checkout", {"cart_id": cart["cart_id"], "card_number": card, "currency": "USD"}
    )
    if not isinstance(order, dict) or not isinstance(order.get("order_id"), str):
        result.reason = result.reason or "checkout: no order id in the answer"
        return result
    result.order_id = order["order_id"]
    if ledger is not None:
        amount = order.get("amount_cents")
        ledger.order(
            order_id=result.order_id,
            tenant=tenant,
            version=result.version,
            amount_cents=amount if type(amount) is int else None,
            requested_at=result.steps[-1].sent_at,
        )
    confirmation = await step("confirmation", "GET", f"/orders/{result.order_id}")
    result.success = bool(confirmation) and confirmation.get("status") == "confirmed"
    return result


@dataclass
class Stats:
    journeys: int = 0
    successes: int = 0
    failures: int = 0
    maintenance: int = 0  # journeys the shop's maintenance mode answered: expected during a restore, not a failure
    errors: int = 0
    skipped: int = 0
    by_version: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    by_card: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    reasons: Counter = field(default_factory=Counter)

    def record(self, brand: str, result: JourneyResult) -> None:
        outcome = "successes" if result.success else "maintenance" if result.maintenance else "failures"
        self.journeys += 1
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.by_version[result.version or "unknown"].update(["journeys", outcome])
        self.by_card[brand].update(["journeys", outcome])
        if result.reason:
            self.reasons[result.reason] += 1

    def as_dict(self) -> dict[str, Any]:
        data = {
            name: getattr(self, name)
            for name in ("journeys", "successes", "failures", "maintenance", "errors", "skipped")
        }
        data["by_version"] = {v: dict(c) for v, c in self.by_version.items()}
        data["by_card"] = {b: dict(c) for b, c in self.by_card.items()}
        data["reasons"] = dict(self.reasons)
        return data


async def run(
    target: str,
    rate: float,
    tenants: list[str],
    cards: str,
    duration: float,
    concurrency: int,
    stop: asyncio.Event,
    ledger: Ledger | None = None,
) -> Stats:
    """Start journeys at `rate` per second until `duration` passes (0: forever) or `stop` is set."""
    stats, rng = Stats(), random.Random()
    slots = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task] = set()

    async def journey(client: httpx.AsyncClient) -> None:
        brand, card = pick_card(cards, rng)
        try:
            stats.record(brand, await run_journey(client, target, rng.choice(tenants), card, rng, ledger=ledger))
        except Exception as exc:  # a shopper must outlive any surprise from the target
            stats.errors += 1
            stats.reasons[f"error: {type(exc).__name__}"] += 1
        finally:
            slots.release()

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=limits) as client:
        started, n = time.monotonic(), 0
        while not stop.is_set() and (duration <= 0 or time.monotonic() - started < duration):
            if slots.locked():
                # Bounded concurrency: a journey that cannot start now is skipped rather than queued.
                stats.skipped += 1
            else:
                await slots.acquire()
                task = asyncio.create_task(journey(client))
                running.add(task)
                task.add_done_callback(running.discard)
            n += 1
            next_at = started + n / rate
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_at - time.monotonic()))
            except TimeoutError:
                pass
        if running:
            _, pending = await asyncio.wait(running, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shop.shopper", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="http://127.0.0.1:18080", help="storefront base URL")
    parser.add_argument("--rate", type=float, default=20.0, help="journeys started per second")
    parser.add_argument("--tenants", default="acme,globex,initech", help="comma-separated tenants")
    parser.add_argument(
        "--cards",
        choices=sorted(CARD_MIXES),
        default="mixed",
        help="card mix: mixed = 50%% visa, 30%% mastercard, 20%% amex",
    )
    parser.add_argument("--duration", type=float, default=0, help="seconds to run; 0 = until SIGTERM/SIGINT")
    parser.add_argument("--concurrency", type=int, default=50, help="most journeys in flight at once")
    parser.add_argument("--stats-file", type=Path, help="write JSON stats here on exit")
    parser.add_argument(
        "--ledger", type=Path, help="append a JSON line per order seen confirmed, and per maintenance answer, here"
    )
    args = parser.parse_args(argv)
    tenants = [t.strip() for t in args.tenants.split(",") if t.strip()]
    if args.rate <= 0 or not tenants or args.concurrency < 1:
        parser.error("--rate and --concurrency must be positive and --tenants non-empty")
    for tenant in tenants:
        try:
            tenant_host(tenant)
        except ValueError as exc:
            parser.error(str(exc))

    async def amain() -> Stats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ledger = Ledger(args.ledger) if args.ledger else None
        try:
            return await run(args.target, args.rate, tenants, args.cards, args.duration, args.concurrency, stop, ledger)
        finally:
            if ledger is not None:
                ledger.close()

    stats = json.dumps(asyncio.run(amain()).as_dict(), indent=2)
    if args.stats_file:
        args.stats_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.stats_file.with_name(args.stats_file.name + ".tmp")
        tmp.write_text(stats + "\n")
        tmp.replace(args.stats_file)
    print(stats)


if __name__ == "__main__":
    main()
