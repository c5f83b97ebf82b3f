"""The shop's load profile as Locust users, run headless by the peak-load gate (`load.py`), one process per version
loaded: `locust -f locustfile.py --headless --host <instance> ...` with the profile in PEAK_LOAD_PROFILE (JSON:
journeys per second, tenant weights, step multiples and seconds) and every request written to PEAK_LOAD_RESULTS
when the run stops.

Each journey has its own users, each paced to a fixed rate that follows the current step (an open-ish load: a
user waits for its answer, so a server that cannot keep up serves fewer journeys than offered, and that shortfall
is measured). Locust runs on gevent, which patches the standard library: it never runs inside the verifier's
asyncio process."""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from locust import FastHttpUser, events, task

PROFILE: dict[str, Any] = json.loads(os.environ.get("PEAK_LOAD_PROFILE", "{}") or "{}")
RESULTS = os.environ.get("PEAK_LOAD_RESULTS", "")
CARD = "4111111111111111"  # a test card the payment sandbox approves (bar its natural declines, answered 402)
HOST_SUFFIX = ".shop.test"
SETUP = "setup"  # requests a user makes before its load starts: not counted

started_at = time.time()
# (seconds since the start, request kind, milliseconds, ok): what the gate judges
samples: list[tuple[float, str, float, bool]] = []


@events.test_start.add_listener
def _started(**_: Any) -> None:
    global started_at
    started_at = time.time()


@events.request.add_listener
def _record(request_type: str, name: str, response_time: float, exception: BaseException | None, **kw: Any) -> None:
    if name != SETUP:
        samples.append(
            (round(kw.get("start_time", time.time()) - started_at, 4), name, round(response_time, 2), exception is None)
        )


@events.test_stop.add_listener
def _write(**_: Any) -> None:
    if RESULTS:
        with open(RESULTS + ".tmp", "w") as out:
            json.dump({"started_at": started_at, "samples": samples}, out)
        os.replace(RESULTS + ".tmp", RESULTS)


def multiple(now: float) -> float:
    steps: list[float] = PROFILE.get("steps") or [1.0]
    index = int((now - started_at) // float(PROFILE.get("step_seconds") or 1e9))
    return steps[min(max(index, 0), len(steps) - 1)]


def tenants() -> tuple[list[str], list[float]]:
    weights: dict[str, float] = PROFILE.get("tenants") or {"acme": 1.0}
    return list(weights), list(weights.values())


def users_for(journey: str) -> int:
    """The journey's users, as the gate counted them (load.py: enough for the highest step)."""
    return int((PROFILE.get("users") or {}).get(journey, 0))


class Journey(FastHttpUser):
    """A user of one journey, paced so that all of the journey's users together start its rate × the step's
    multiple journeys per second."""

    abstract = True
    journey = ""

    def on_start(self) -> None:
        self.names, self.weights = tenants()
        self.rate = float(PROFILE["journeys"][self.journey]) / max(self.fixed_count, 1)
        time.sleep(random.uniform(0, 1 / (self.rate * multiple(time.time()))))  # spread the users' first starts
        self.next_at = time.time()

    def wait_time(self) -> float:
        """Until the user's next start on its own schedule (so Locust's overhead does not slow the rate down); a
        user that fell behind (slow answers) starts at once, without a burst to catch up."""
        now = time.time()
        interval = 1 / (self.rate * multiple(now))
        self.next_at = max(self.next_at + interval, now - interval)
        return max(0.0, self.next_at - now)

    def host_header(self) -> dict[str, str]:
        return {"Host": random.choices(self.names, self.weights)[0] + HOST_SUFFIX}


class Browse(Journey):
    journey = "browse"
    fixed_count = users_for("browse")

    @task
    def browse(self) -> None:
        self.client.get("/products", headers=self.host_header(), name="products")


class Checkout(Journey):
    """POST /cart with a product of the catalog, then POST /checkout; a card declined (402) is the shop working."""

    journey = "checkout"
    fixed_count = users_for("checkout")

    def on_start(self) -> None:
        with self.client.get("/products", name=SETUP, catch_response=True) as answer:
            products = (answer.json() or {}).get("products") or [] if answer.status_code == 200 else []
            answer.success()
        self.skus = [p["sku"] for p in products if isinstance(p, dict) and isinstance(p.get("sku"), str)] or ["none"]
        super().on_start()

    @task
    def checkout(self) -> None:
        headers = self.host_header()
        items = [{"sku": random.choice(self.skus), "qty": 1}]
        with self.client.post("/cart", json={"items": items}, headers=headers, name="cart", catch_response=True) as r:
            cart = r.json().get("cart_id") if r.status_code == 201 else None
            if cart is None:
                r.failure(f"cart answered {r.status_code}")
                return
        body = {"cart_id": cart, "card_number": CARD, "currency": "USD"}
        with self.client.post("/checkout", json=body, headers=headers, name="checkout", catch_response=True) as r:
            if r.status_code in (201, 402):
                r.success()
            else:
                r.failure(f"checkout answered {r.status_code}")


# a journey the profile gives no load has no users: Locust refuses a class with none
for _cls in (Browse, Checkout):
    if not _cls.fixed_count:
        del globals()[_cls.__name__]
del _cls
