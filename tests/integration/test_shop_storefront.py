"""Shop bundles as real processes against the local stack's Kafka and PostgreSQL.

Starts the payment sandbox and the built v2 and v3 bundles (extracted, run standalone with their own
entrypoint), runs shopper journeys and checks the orders in the database and the business events on Kafka.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import httpx
import pytest

from contracts.cloudevents import decode, header_dict
from releasegate_platform.haproxy import HAProxy, HAProxyError
from releasegate_runtime import secrets
from services.verifier.adapters import haproxy_log
from shop.build_bundles import build_all
from shop.shopper import run_journey
from tests.support.shop import (
    AMEX,
    DECLINE_TYPES,
    EVENT_FIELDS,
    OWN_FIELDS,
    REPO,
    SHOP_DB,
    SUCCESS_TYPES,
    VISA,
    Process,
    extract,
    free_port,
    host,
    shop_kafka_env,
    spawn,
    tenant,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def shops(tmp_path_factory, topic) -> AsyncIterator[dict[str, Process]]:
    """The payment sandbox plus v2 (staging) and v3 (production) storefronts, started at the same time."""
    work = tmp_path_factory.mktemp("shop")
    digests = build_all(work / "store")
    # The bundles must run standalone, so nothing of this repository is put on their path.
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
    for version, environment in (("v2", "staging"), ("v3", "production")):
        port = free_port()
        env = base_env | {
            "SHOP_PORT": str(port),
            "SHOP_ENVIRONMENT": environment,
            "SHOP_INSTANCE_ID": f"it-{version}-{port}",
            **shop_kafka_env(),
            "SHOP_DATABASE_URL": SHOP_DB,
            "SHOP_PAYMENT_URL": sandbox.url,
            "SHOP_EVENTS_TOPIC": topic,
        }
        bundle = extract(work / "store", digests[version], work / version)
        shops[version] = spawn(f"storefront-{version}", [sys.executable, "-m", "storefront"], bundle, env, port, work)
    try:
        await asyncio.gather(sandbox.wait_healthy(), *(p.wait_healthy() for p in shops.values()))
        yield shops
    finally:
        codes = {p.name: p.terminate() for p in [*shops.values(), sandbox] if p.popen.poll() is None}
    assert codes == {p.name: 0 for p in [*shops.values(), sandbox]}, f"unclean shutdown: {codes}"


def check_contract(record, tenant: str, environment: str, instance: str, version: str) -> dict:
    headers = header_dict(record.headers)
    envelope = decode(record.headers, record.value)
    assert headers["ce_specversion"] == "1.0"
    assert uuid.UUID(headers["ce_id"]).version == 4
    assert headers["ce_source"] == f"shop/{environment}/{instance}"
    assert headers["ce_tenant"] == tenant
    assert headers["content-type"] == "application/json"
    assert datetime.fromisoformat(headers["ce_time"]).utcoffset().total_seconds() == 0
    data = json.loads(record.value)
    assert set(data) == EVENT_FIELDS | OWN_FIELDS.get(headers["ce_type"], set())
    assert (data["version"], data["environment"], data["tenant"], data["instance"]) == (
        version,
        environment,
        tenant,
        instance,
    )
    assert envelope.type == headers["ce_type"]
    return data


async def test_v2_visa_journey_places_the_order_and_emits_its_events(shops, events):
    shop, who = shops["v2"], tenant()
    async with httpx.AsyncClient(timeout=10) as client:
        result = await run_journey(client, shop.url, who, VISA)
        products = (await client.get(f"{shop.url}/products", headers=host(who))).json()["products"]
        metrics = (await client.get(f"{shop.url}/metrics")).text
    assert result.success, result
    assert result.version == "v2" and result.instance.startswith("it-v2-")
    assert len(products) >= 8 and all("badge" in p for p in products)
    assert 'shop_checkouts_total{outcome="succeeded",version="v2"}' in metrics
    assert 'route="/orders/{id}"' in metrics

    conn = await asyncpg.connect(SHOP_DB)
    try:
        order = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", result.order_id)
        payment = await conn.fetchrow("SELECT * FROM payments WHERE order_id = $1", result.order_id)
    finally:
        await conn.close()
    assert (order["tenant"], order["version"], order["environment"], order["status"]) == (
        who,
        "v2",
        "staging",
        "confirmed",
    )
    assert payment["auth_code"] and payment["amount_cents"] == order["amount_cents"] > 0

    records = await events.for_tenant(who, len(SUCCESS_TYPES))
    assert [header_dict(r.headers)["ce_type"] for r in records] == SUCCESS_TYPES
    data = [check_contract(r, who, "staging", result.instance, "v2") for r in records]
    assert len({d["checkout_id"] for d in data}) == 1
    assert [d["order_id"] for d in data] == [None, None, None, result.order_id, result.order_id, result.order_id]
    assert all(d["amount_cents"] == order["amount_cents"] and d["reason"] is None for d in data)


async def test_the_tenant_is_named_by_the_host_and_never_by_a_header(shops):
    shop, who = shops["v2"], tenant()
    pay = {"card_number": VISA}
    async with httpx.AsyncClient(timeout=10) as client:
        cart = (
            await client.post(f"{shop.url}/cart", json={"items": [{"sku": "MUG-004", "qty": 1}]}, headers=host(who))
        ).json()
        pay["cart_id"] = cart["cart_id"]
        other = await client.post(f"{shop.url}/checkout", json=pay, headers=host(tenant()))
        by_header = await client.post(f"{shop.url}/checkout", json=pay, headers={"X-Tenant": who})
        old_suffix = await client.post(f"{shop.url}/checkout", json=pay, headers={"Host": f"{who}.shop.local"})
        own = await client.post(f"{shop.url}/checkout", json=pay, headers=host(who) | {"X-Tenant": tenant()})
    assert other.status_code == 404, "another tenant's Host does not see the cart"
    assert (by_header.status_code, by_header.json()) == (400, {"reason": "invalid_tenant"}), "X-Tenant is ignored"
    assert old_suffix.status_code == 400
    assert own.status_code == 201 and own.json()["status"] == "confirmed", "a forged X-Tenant changes nothing"
    assert own.headers["X-Shop-Version"] == "v2"


async def test_v3_declines_amex_as_invalid_card_but_still_takes_visa(shops, events):
    shop, amex_tenant, visa_tenant = shops["v3"], tenant(), tenant()
    async with httpx.AsyncClient(timeout=10) as client:
        declined = await run_journey(client, shop.url, amex_tenant, AMEX)
        approved = await run_journey(client, shop.url, visa_tenant, VISA)
    assert approved.success and approved.version == "v3"
    assert not declined.success and declined.version == "v3"
    assert declined.reason == "checkout: invalid_card"
    assert [(s.name, s.status) for s in declined.steps][-1] == ("checkout", 402)

    records = await events.for_tenant(amex_tenant, len(DECLINE_TYPES))
    assert [header_dict(r.headers)["ce_type"] for r in records] == DECLINE_TYPES
    data = [check_contract(r, amex_tenant, "production", declined.instance, "v3") for r in records]
    assert [d["reason"] for d in data] == [None, None, "invalid_card", "invalid_card"]
    assert all(d["order_id"] is None for d in data)
    conn = await asyncpg.connect(SHOP_DB)
    try:
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE tenant = $1", amex_tenant) == 0
        # the stock held for the declined checkout went back
        assert await conn.fetchval(
            "SELECT array_agg(status) FROM inventory_reservations WHERE tenant = $1", amex_tenant
        ) == ["released"]
    finally:
        await conn.close()


# ------------------------------------------------------------------ tenant and canary cookie through a real HAProxy
HAPROXY_TEMPLATE = REPO / "deploy" / "haproxy" / "haproxy.cfg"
# Addresses fixed in the template that a private HAProxy moves to free ports (the stack's own may be running).
HAPROXY_FIXED = ("127.0.0.1:18080", "127.0.0.1:18081", "127.0.0.1:18404", "127.0.0.1:15514")
_spec = importlib.util.spec_from_file_location("shop_tenancy", REPO / "shop/bundle_src/storefront/tenancy.py")
tenancy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tenancy)


class _Lines(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[str]) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: object) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            self.queue.put_nowait(line)


@dataclass
class PrivateHAProxy:
    url: str  # fe_production
    admin: HAProxy
    tenant_map: str
    key: bytes  # its canary cookie key
    log: asyncio.Queue[str]  # its request log lines, as the verifier receives them

    async def next_request(self, timeout: float = 5) -> haproxy_log.Sample:
        """The next request line HAProxy logged, parsed as the verifier parses it."""
        while (sample := haproxy_log.parse(await asyncio.wait_for(self.log.get(), timeout))) is None:
            pass
        return sample

    def forget_logged(self) -> None:
        """Drop the lines logged so far (a failed test's leftovers must not shift the next test's lines)."""
        while not self.log.empty():
            self.log.get_nowait()


@pytest.fixture(scope="module")
async def haproxy(tmp_path_factory, shops) -> AsyncIterator[PrivateHAProxy]:
    """The stack's HAProxy configuration run privately: deploy/haproxy/haproxy.cfg rendered as deploy/stack.sh does,
    moved to free ports, with a canary key of its own; slot s1 of shop_production is the v3 shop (stable here),
    slot s1 of shop_production_wave the v2 shop (the candidate), and its request log comes to this test."""
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed: run `bash deploy/stack.sh install`", pytrace=False)
    run = tmp_path_factory.mktemp("haproxy")
    text = HAPROXY_TEMPLATE.read_text().replace("@HAPROXY_RUN_DIR@", str(run)).replace("@CANARY_KEY_ID@", "test")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    moved = {fixed: f"127.0.0.1:{free_port()}" for fixed in HAPROXY_FIXED[:-1]}
    moved[HAPROXY_FIXED[-1]] = f"127.0.0.1:{udp.getsockname()[1]}"
    for fixed, address in moved.items():
        assert text.count(fixed) == 1, f"{fixed} is no longer once in {HAPROXY_TEMPLATE}: update this fixture"
        text = text.replace(fixed, address)
    for name in ("tenants-production.map", "maintenance-production.map"):
        (run / name).write_text("")
    config = run / "haproxy.cfg"
    config.write_text(text)
    key = os.urandom(secrets.CANARY_KEY_BYTES)
    env = {**os.environ, "RG_CANARY_KEY": base64.b64encode(key).decode()}
    check = await asyncio.create_subprocess_exec(
        "haproxy",
        "-c",
        "-q",
        "-f",
        str(config),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await check.communicate()
    assert check.returncode == 0, output.decode(errors="replace")

    lines: asyncio.Queue[str] = asyncio.Queue()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _Lines(lines), sock=udp)
    log = run / "haproxy.log"
    process = Process(
        "haproxy",
        # a Popen like every shop process here (Process polls and terminates it); starting it does not block
        subprocess.Popen(  # noqa: ASYNC220
            ["haproxy", "-db", "-f", str(config)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        ),
        log,
        f"http://{moved['127.0.0.1:18080']}",
    )
    admin = HAProxy(str(run / "admin.sock"))
    slots = {"shop_production": shops["v3"], "shop_production_wave": shops["v2"]}

    pointed = False

    async def slots_up() -> bool:
        nonlocal pointed
        if process.popen.poll() is not None:
            raise AssertionError(f"haproxy exited {process.popen.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if not pointed:
                for backend, shop in slots.items():
                    await admin.point(backend, "s1", int(shop.url.rsplit(":", 1)[1]))
                    await admin.set_state(backend, "s1", "ready")
                pointed = True
            states = [s for backend in slots for s in await admin.servers(backend) if s.name == "s1"]
        except HAProxyError:  # the runtime API is not listening yet
            return False
        return len(states) == 2 and all(s.operational and not s.maintenance for s in states)

    try:
        await wait_for(slots_up, 30, "the HAProxy runtime API, then both slots up (health checks of v3 and v2)")
        yield PrivateHAProxy(process.url, admin, str(run / "tenants-production.map"), key, lines)
    finally:
        transport.close()
        process.terminate()


async def test_haproxy_and_the_shop_name_the_same_tenant_whatever_the_client_claims(haproxy):
    haproxy.forget_logged()
    who, claimed = tenant(), tenant()
    async with httpx.AsyncClient(timeout=10) as client:
        cart = await client.post(
            f"{haproxy.url}/cart",
            json={"items": [{"sku": "MUG-004", "qty": 1}]},
            headers={"Host": f"{who}.shop.test:8080", "X-Tenant": claimed},
        )
    logged = await haproxy.next_request()
    assert cart.status_code == 201, cart.text
    conn = await asyncpg.connect(SHOP_DB)
    try:
        served_as = await conn.fetchval("SELECT tenant FROM carts WHERE id = $1", uuid.UUID(cart.json()["cart_id"]))
    finally:
        await conn.close()
    assert served_as == who, "the shop serves the tenant of the Host, not the X-Tenant header"
    assert (logged[5], logged[3], logged[2]) == (who, 201, "v3"), "the log says the same tenant"


async def test_a_tenant_reaches_the_candidate_by_its_host_only(haproxy):
    haproxy.forget_logged()
    moved, other = tenant(), tenant()
    await haproxy.admin.map_set(haproxy.tenant_map, moved, "shop_production_wave")
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def version(headers: dict[str, str]) -> str | None:
                return (await client.get(f"{haproxy.url}/products", headers=headers)).headers.get("X-Shop-Version")

            by_host = [await version(host(moved)) for _ in range(3)]
            claimed = [await version(host(other) | {"X-Tenant": moved}) for _ in range(3)]
            no_tenant = [await version({"X-Tenant": moved}) for _ in range(3)]
    finally:
        await haproxy.admin.map_del(haproxy.tenant_map, moved)
    assert by_host == ["v2"] * 3, "the moved tenant (positive control) gets the candidate"
    assert claimed == ["v3"] * 3 and no_tenant == ["v3"] * 3, "claiming the moved tenant by header does not"
    logged = [await haproxy.next_request() for _ in range(9)]
    assert [s[5] for s in logged] == [moved] * 3 + [other] * 3 + [None] * 3


@pytest.mark.parametrize(
    "host_header",
    [
        "acme.shop.test",
        "ACME.shop.test:18080",
        "t-1.shop.test:1",
        "a" * 32 + ".shop.test",
        "127.0.0.1",
        "localhost:18080",
        "shop.test",
        "a" * 33 + ".shop.test",
        "-acme.shop.test",
        "a.b.shop.test",
        "acme.shop.test.",
        "acme.shop.local",
        "acme.shop.test:abc",
        "acme.shop.test:123456",
        "ac_me.shop.test",
        "acme.shop.test, globex.shop.test",
        "\u212acme.shop.test",
    ],
)
async def test_haproxy_applies_the_storefronts_tenant_rule(haproxy, host_header):
    haproxy.forget_logged()
    async with httpx.AsyncClient(timeout=10) as client:
        await client.get(f"{haproxy.url}/products", headers={"Host": host_header.encode()})
    assert (await haproxy.next_request())[5] == tenancy.tenant_from_host(host_header)


async def test_only_a_cookie_signed_with_the_key_reaches_the_candidate(haproxy):
    signed = secrets.canary_cookie(haproxy.key, "alice")
    user, mac = signed.split(".")
    forged = {
        "the old unsigned cookie": "1",
        "another user's mac": f"bob.{mac}",
        "one digit off": f"{user}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}",
        "upper-case mac": f"{user}.{mac.upper()}",
        "the full untruncated mac": f"{user}.{mac}{'0' * 32}",
        "signed with another key": secrets.canary_cookie(os.urandom(32), "alice"),
    }
    async with httpx.AsyncClient(timeout=10) as client:

        async def versions(cookie: str) -> set[str | None]:
            return {
                (await client.get(f"{haproxy.url}/products", cookies={"rg_canary": cookie})).headers.get(
                    "X-Shop-Version"
                )
                for _ in range(3)
            }

        with_signed = await versions(signed)
        with_forged = {name: await versions(cookie) for name, cookie in forged.items()}
    assert with_signed == {"v2"}, "the signed cookie (positive control) reaches the candidate"
    assert with_forged == {name: {"v3"} for name in forged}, "no other cookie does"
