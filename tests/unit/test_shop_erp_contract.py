"""The ERP's order-export contract, the ERP sandbox's behaviour, and the storefront's ERP client against it
(v2's payload, and v9's that breaks the contract)."""

import importlib.util
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from shop.erp_sandbox import OrderExport, TokenBuckets, check, create_app

SHOP = Path(__file__).resolve().parents[2] / "shop"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is being made
    spec.loader.exec_module(module)
    return module


erp_v2 = load(SHOP / "bundle_src/storefront/erp.py", "shop_erp_v2")
erp_v9 = load(SHOP / "versions/v9/storefront/erp.py", "shop_erp_v9")


def order_row(tenant: str = "acme", **changes) -> dict:
    """An `orders` row as the exporter reads it."""
    row = {
        "id": uuid.uuid4(),
        "tenant": tenant,
        "region": "US-NY",
        "currency": "USD",
        "amount_cents": 10561,
        "tax_cents": 861,
        "lines": json.dumps(
            [{"sku": "TEE-001", "qty": 2, "unit_cents": 1900}, {"sku": "HOOD-002", "qty": 1, "unit_cents": 5900}]
        ),
        "created_at": datetime(2025, 5, 16, 14, 2, 3, 123456, tzinfo=UTC),
    }
    return row | changes


def document(**changes) -> dict:
    return erp_v2.payload(order_row()) | changes


def refused_fields(doc: dict) -> set[str]:
    order, found = check(json.dumps(doc).encode())
    assert order is None
    return {v["field"] for v in found}


class TestOrderExportContract:
    def test_accepts_what_the_storefront_exports(self):
        doc = erp_v2.payload(order_row())
        assert doc["placed_at"] == "2025-05-16T14:02:03.123456Z"
        order, found = check(json.dumps(doc).encode())
        assert found == [] and isinstance(order, OrderExport)
        assert order.amount_cents == 10561 and [line.qty for line in order.lines] == [2, 1]

    def test_accepts_vat_included_in_the_line_prices(self):
        doc = document(region="DE", amount_cents=9700, tax_cents=1549)
        assert check(json.dumps(doc).encode())[1] == []

    def test_refuses_v9_amount_field_names_and_says_which(self):
        doc = erp_v9.payload(order_row())
        assert refused_fields(doc) == {"amount", "tax", "amount_cents", "tax_cents"}

    def test_refuses_an_order_without_lines(self):
        doc = document()
        del doc["lines"]
        assert refused_fields(doc) == {"lines"}
        assert refused_fields(document(lines=[])) == {"lines"}

    def test_does_not_coerce_types_or_accept_local_times(self):
        bad = document(
            placed_at="2025-05-16T14:02:03",
            currency="usd",
            order_id="42",
            lines=[{"sku": "TEE-001", "qty": "2", "unit_cents": 1900}],
        )
        assert refused_fields(bad) == {"placed_at", "currency", "order_id", "lines.0.qty"}

    def test_refuses_totals_that_match_neither_included_nor_added_tax(self):
        order, found = check(json.dumps(document(amount_cents=9000)).encode())
        assert order is None and found[0]["field"] == "(order)"
        assert "neither the lines' subtotal 9700" in found[0]["message"]


async def sandbox(rate_limit: float, burst: int) -> TestClient:
    client = TestClient(TestServer(create_app(fail_rate=0, latency_ms=(0, 0), rate_limit=rate_limit, burst=burst)))
    await client.start_server()
    return client


@pytest.fixture
async def erp():
    """An ERP sandbox without random failures, latency or throttling."""
    client = await sandbox(rate_limit=1000, burst=1000)
    yield client
    await client.close()


@pytest.fixture
async def strict_erp():
    """An ERP sandbox that takes 2 exports a second per tenant, 3 saved up."""
    client = await sandbox(rate_limit=2, burst=3)
    yield client
    await client.close()


class TestErpSandbox:
    async def test_records_an_order_once_however_often_it_is_sent(self, erp):
        doc = document()
        first = await erp.post("/orders", json=doc)
        again = await erp.post("/orders", json=doc)
        assert (first.status, (await first.json())["status"]) == (201, "accepted")
        assert (again.status, (await again.json())["status"]) == (200, "duplicate")
        listed = (await (await erp.get("/orders", params={"tenant": "acme"})).json())["orders"]
        assert [o["order_id"] for o in listed] == [doc["order_id"]]
        assert (listed[0]["attempts"], listed[0]["duplicates"]) == (2, 1)
        assert listed[0]["amount_cents"] == 10561 and listed[0]["received_at"].endswith("Z")
        assert (await (await erp.get(f"/orders/{doc['order_id']}")).json())["attempts"] == 2

    async def test_refuses_other_content_under_a_known_order_id(self, erp):
        doc = document()
        await erp.post("/orders", json=doc)
        conflict = await erp.post("/orders", json=doc | {"currency": "EUR"})
        assert conflict.status == 409 and (await conflict.json())["reason"] == "conflict"

    async def test_rejects_a_contract_violation_with_the_reason_and_remembers_it(self, erp):
        doc = erp_v9.payload(order_row(tenant="globex"))
        response = await erp.post("/orders", json=doc, headers={"X-Exporter": "v9/shop-1"})
        body = await response.json()
        assert response.status == 422 and body["reason"] == "contract_violation"
        assert {"field": "amount", "message": "Extra inputs are not permitted", "type": "extra_forbidden"} in body[
            "violations"
        ]
        rejections = (await (await erp.get("/rejections", params={"tenant": "globex"})).json())["rejections"]
        assert [(r["order_id"], r["exporter"]) for r in rejections] == [(doc["order_id"], "v9/shop-1")]
        missing = await erp.get(f"/orders/{doc['order_id']}")
        assert missing.status == 404 and (await missing.json())["attempts"] == 1

    async def test_throttles_each_tenant_on_its_own_with_retry_after(self, strict_erp):
        erp = strict_erp
        answers = [(await erp.post("/orders", json=document())).status for _ in range(4)]
        throttled = await erp.post("/orders", json=document())
        other_tenant = await erp.post("/orders", json=erp_v2.payload(order_row(tenant="initech")))
        assert answers[:3] == [201, 201, 201] and answers[3] == 429
        assert throttled.status == 429 and int(throttled.headers["Retry-After"]) >= 1
        assert other_tenant.status == 201

    async def test_injected_failures_hit_only_their_tenant_and_count_as_attempts(self, erp):
        await erp.post("/faults", json={"tenant": "acme", "fail_next": 2, "throttle_next": 1, "retry_after_s": 7})
        doc = document()
        statuses = [(await erp.post("/orders", json=doc)) for _ in range(4)]
        assert [r.status for r in statuses] == [429, 503, 503, 201]
        assert statuses[0].headers["Retry-After"] == "7"
        assert (await erp.post("/orders", json=erp_v2.payload(order_row(tenant="globex")))).status == 201
        assert (await (await erp.get(f"/orders/{doc['order_id']}")).json())["attempts"] == 4

    async def test_lists_orders_received_since_a_moment(self, erp):
        await erp.post("/orders", json=document())
        later = datetime.now(UTC).timestamp() + 60
        assert (await (await erp.get("/orders", params={"since": str(later)})).json())["orders"] == []
        assert (await erp.get("/orders", params={"since": "yesterday"})).status == 400


def test_token_buckets_refill_at_their_rate():
    buckets = TokenBuckets(rate=2, burst=1)
    assert buckets.take("acme", 0.0) == 0
    assert buckets.take("acme", 0.1) == pytest.approx(0.4)  # 0.2 of a token there, 0.8 to come at 2/s
    assert buckets.take("acme", 0.6) == 0


class TestStorefrontErpClient:
    async def test_reads_each_erp_answer_as_accepted_throttled_retryable_or_refused(self, erp):
        base = str(erp.make_url("")).rstrip("/")
        async with aiohttp.ClientSession() as session:
            doc = erp_v2.payload(order_row())
            assert await erp_v2.send(session, base, doc, exporter="v2/i") == erp_v2.Answer(accepted=True)
            assert (await erp_v2.send(session, base, doc, exporter="v2/i")).accepted  # duplicate
            await erp.post("/faults", json={"tenant": "acme", "fail_next": 1, "throttle_next": 1, "retry_after_s": 4})
            throttled = await erp_v2.send(session, base, document(), exporter="v2/i")
            failed = await erp_v2.send(session, base, document(), exporter="v2/i")
            refused = await erp_v9.send(session, base, erp_v9.payload(order_row()), exporter="v9/i")
            unreachable = await erp_v2.send(session, "http://127.0.0.1:9", document(), exporter="v2/i")
        assert (throttled.accepted, throttled.retry_after_s) == (False, 4.0)
        assert (failed.accepted, failed.retryable, failed.error[:3]) == (False, True, "503")
        assert (refused.accepted, refused.retryable, refused.error[:3]) == (False, False, "422")
        assert "amount_cents" in refused.error
        assert (unreachable.accepted, unreachable.retryable) == (False, True)

    def test_retry_after_may_be_seconds_or_an_http_date(self):
        in_30s = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
        assert erp_v2._seconds("3") == 3.0
        assert 25 < erp_v2._seconds(in_30s) <= 30
        assert erp_v2._seconds(None) == erp_v2._seconds("soon") == erp_v2.DEFAULT_RETRY_AFTER_S
