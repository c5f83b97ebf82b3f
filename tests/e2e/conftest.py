"""End-to-end harness: the six services and the shop team's verifiers as OS processes, synthetic shoppers as
traffic (each keeping a ledger of the orders it saw confirmed), a clean start, and the probes that say which
version really answers a given tenant or an internal user through HAProxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
import pytest

from releasegate_cli import client
from shop.shopper import tenant_host
from tests.conftest import LOGS, REPO, Service, wait_until
from tests.support.services import start_shopper

SERVICES = ["coordinator", "gatekeeper", "dr_checker", "deployer", "verifier", "rollback"]
# the catalog's required and advisory team verifiers
VERIFIERS = ["erp_export", "tax", "inventory_latency", "peak_load"]
PRODUCTION, STAGING = "http://127.0.0.1:18080", "http://127.0.0.1:18081"
PRODUCTION_TENANTS = ("acme", "globex", "initech")  # the production shopper's tenants
CANDIDATES = REPO / "examples" / "candidates"
# Each shopper's ledger (shop/shopper.py --ledger): the orders it saw confirmed and the maintenance answers it got,
# the customer's own account, independent of the shop's events and database. Emptied when a module's stack starts.
LEDGERS = {"production": LOGS / "shopper-production.ledger.jsonl", "staging": LOGS / "shopper-staging.ledger.jsonl"}
INTERNAL_USER = "dave"  # a person of policies/identities.yaml: may hold a canary cookie


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["releasegate", *args], cwd=REPO, text=True, capture_output=True, timeout=timeout)


KEYS = REPO / "examples" / "keys"
RELEASE_MANAGER_KEY = KEYS / "carol.key"  # demo key: carol may abort, pause, resume and promote shop releases
LOCAL_CALENDAR = REPO / "deploy" / "local" / "calendar.yaml"


def submit(version: str, *, approvers: tuple[str, ...] = ()) -> str:
    """Submit a candidate; `approvers` sign their approval as soon as the release exists (ops approving a
    risky change up front; the approvals count at the production gate)."""
    out = cli("submit", str(CANDIDATES / f"shop-{version}.json"))
    assert out.returncode == 0, out.stderr
    rid = out.stdout.strip()
    if approvers:
        _until_registered(rid)
    for who in approvers:
        approve(rid, who)
    return rid


def _until_registered(rid: str, timeout: float = 60) -> None:
    """The candidate and the approvals travel on different topics: an approval the coordinator reads before the
    candidate names an unknown release and is dead-lettered. Ops approve a release they can see, and so do we."""
    deadline = time.monotonic() + timeout
    while cli("status", rid).returncode != 0:
        if time.monotonic() > deadline:
            pytest.fail(f"release {rid} not registered within {timeout:.0f}s")


def approve(rid: str, who: str, *, kind: str = "approval", reason: str = "reviewed the change") -> str:
    out = cli("approve", rid, "--reason", reason, "--key", str(KEYS / f"{who}.key"), "--kind", kind)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def operate(command: str, rid: str, reason: str, *args: str, who: str = "carol") -> subprocess.CompletedProcess:
    """`releasegate abort|pause|resume|promote`, signed with `who`'s demo key."""
    return cli(command, rid, "--reason", reason, "--key", str(KEYS / f"{who}.key"), *args)


def status(rid: str) -> dict:
    return json.loads(cli("status", rid, "--json").stdout)


def release(
    version: str, *, promoted: bool, timeout: float = 400, approvers: tuple[str, ...] = ()
) -> tuple[str, list[dict]]:
    """Submit a candidate through the CLI, watch it to the end, check how it ended; its id and timeline."""
    rid = submit(version, approvers=approvers)
    watched = cli("watch", rid, "--timeout", str(timeout), timeout=timeout + 20)
    assert watched.returncode == (0 if promoted else 1), watched.stdout[-2000:]
    return rid, status(rid)["timeline"]


def prove_recovery(env: dict[str, str]) -> None:
    """v1 in place (so the shop schema exists), then a fresh backup and a passing restore drill, as an operator
    does before a day of releases: the DR check of tier-1 releases requires both."""
    run_env = {**os.environ, **env}
    for module, arg in (
        ("services.deployer.bootstrap", str(CANDIDATES / "shop-v1.json")),
        ("services.dr_checker.backup", "shop"),
        ("services.dr_checker.drill", "shop"),
    ):
        out = subprocess.run([sys.executable, "-m", module, arg], cwd=REPO, env=run_env, capture_output=True, text=True)
        assert out.returncode == 0, f"{module}: {out.stdout}{out.stderr}"


# a backup and drill this recent still prove recovery for the next module on the same stack (the shop's RPO is an
# hour; the modules that age or break the evidence on purpose run on a stack of their own)
PROOF_FRESH_SECONDS = 900


class ReleaseStack:
    """The six services, the team verifiers and the synthetic shoppers as OS processes, in one environment (the
    catalog and calendar a module picks). Starting it and proving recovery takes most of a minute, so consecutive
    modules that ask for the same environment share it (`shared_stack`); each module still gets a clean start:
    no release left in flight, and a backup and restore drill at most PROOF_FRESH_SECONDS old."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = {"RG_CALENDAR_FILE": str(LOCAL_CALENDAR), **(env or {})}
        self.running: dict[str, Service] = {}
        self.shoppers: list[subprocess.Popen] = []
        self.proven_at: float | None = None  # when this stack last took a backup and passed a restore drill

    def start(self) -> ReleaseStack:
        self.running = {name: Service(name, self.env).start() for name in SERVICES}
        self.running |= {name: Service(name, self.env, package="verifiers").start() for name in VERIFIERS}
        self.shoppers = [
            start_shopper(PRODUCTION, "mixed", 16, ",".join(PRODUCTION_TENANTS), LEDGERS["production"]),
            start_shopper(STAGING, "visa", 6, "qa", LEDGERS["staging"]),
        ]
        return self

    def exited(self) -> list[str]:
        """The processes of the stack that are not running any more (a test that stops one restarts it)."""
        gone = [name for name, svc in self.running.items() if svc.proc is None or svc.proc.poll() is not None]
        return gone + [f"shopper {p.pid}" for p in self.shoppers if p.poll() is not None]

    async def clean_start(self, settings) -> None:
        leftovers = await client.abort_in_flight(
            settings, "carol", "clean start for the end-to-end tests", key=RELEASE_MANAGER_KEY
        )
        await wait_until(lambda: client.all_ended(settings, leftovers), 240, f"left-over releases {leftovers} to end")
        if self.proven_at is None or time.monotonic() - self.proven_at > PROOF_FRESH_SECONDS:
            prove_recovery(self.env)
            self.proven_at = time.monotonic()

    def stop(self) -> None:
        for p in self.shoppers:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(15)
        for svc in self.running.values():
            svc.stop()
        self.running, self.shoppers = {}, []


class SharedStack:
    """The release stack that consecutive modules asking for the same environment share: `for_module` starts it, or
    reuses the one running when its environment is the same and none of its processes exited; `close` stops it
    (tests/conftest.py does, before the first test that does not use it: that test may start services of its own)."""

    def __init__(self) -> None:
        self.stack: ReleaseStack | None = None

    async def for_module(self, settings, env: dict[str, str]) -> dict[str, Service]:
        wanted = ReleaseStack(env)
        if self.stack is None or self.stack.env != wanted.env or self.stack.exited():
            self.close()
            self.stack = wanted.start()
        await self.stack.clean_start(settings)
        return self.stack.running

    def close(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None


shared_stack = SharedStack()


async def served(pool, version: str, rid: str, tenant: str | None = None) -> int:
    """Production requests (of `tenant`, if given) HAProxy logged as answered by `version` since the release
    began."""
    async with pool.acquire() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM http_samples WHERE environment = 'production' AND version = $1"
            " AND ($3::text IS NULL OR tenant = $3)"
            " AND at >= (SELECT created_at FROM sagas WHERE release_id = $2)",
            version,
            rid,
            tenant,
        )


def canary_cookie(user: str = INTERNAL_USER) -> str:
    """The signed canary cookie value of an internal user, obtained as an operator does (`releasegate
    canary-cookie USER`, which signs with the stack's canary key)."""
    out = cli("canary-cookie", user)
    assert out.returncode == 0, out.stdout + out.stderr
    name, _, value = out.stdout.strip().partition("=")
    assert name == "rg_canary" and value.startswith(f"{user}."), out.stdout
    return value


@dataclass(frozen=True)
class Client:
    """A client of a frontend: its tenant, named the only way HAProxy and the shop accept (the Host
    `<tenant>.shop.test`), and/or the canary cookie of an internal user."""

    name: str
    tenant: str | None = None
    cookie: str | None = None

    async def ask(self, http: httpx.AsyncClient, base_url: str) -> str:
        """The version that answers one request, else `http-<status>` or the transport error's name."""
        headers = {"Host": tenant_host(self.tenant)} if self.tenant else {}
        try:
            r = await http.get(f"{base_url}/products", headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return r.headers.get("X-Shop-Version") or f"http-{r.status_code}"

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=5, cookies={"rg_canary": self.cookie} if self.cookie else None)


def tenants_and_insider(tenants: Iterable[str], cookie: str) -> list[Client]:
    """A client per tenant and one internal user with the canary cookie (and no tenant)."""
    return [*(Client(t, tenant=t) for t in sorted(set(tenants))), Client("canary-cookie", cookie=cookie)]


async def answers(base_url: str, who: Client, requests: int = 30) -> Counter[str]:
    """What answered `requests` real requests of `who` through the frontend."""
    async with who.http() as http:
        return Counter([await who.ask(http, base_url) for _ in range(requests)])


async def assert_only(version: str, clients: list[Client], base_url: str = PRODUCTION, requests: int = 30) -> None:
    """Every one of `clients` is answered by `version` alone. (A client of no tenant would prove little: HAProxy
    sends it to the stable backend whatever the tenant map or the cookie say.)"""
    seen = {who.name: await answers(base_url, who, requests) for who in clients}
    wrong = {name: dict(counts) for name, counts in seen.items() if set(counts) != {version}}
    assert not wrong, f"expected every answer from {version}; got {wrong}"


def moved_tenants(timeline: list[dict]) -> set[str]:
    """The tenants a rollback routed back from the candidate, as its timeline says (`tenants a, b routed back`)."""
    moved: set[str] = set()
    for entry in timeline:
        if entry["actor"] == "rollback" and (m := re.search(r"tenants (.+?) routed back", entry["reason"])):
            moved |= {t.strip() for t in m.group(1).split(",")}
    return moved


async def assert_back_on_stable(stable: str, timeline: list[dict], cookie: str) -> set[str]:
    """After a rollback: each tenant the rollback moved back, every shopper tenant, and an internal user with the
    canary cookie are answered by `stable` alone; returns the moved tenants."""
    moved = moved_tenants(timeline)
    await assert_only(stable, tenants_and_insider(moved | set(PRODUCTION_TENANTS), cookie))
    return moved


class TrafficSampler:
    """Asks the frontend, as each client, which version answers, every `every_s` seconds while a release runs (run
    the release in a thread meanwhile). The samples are the positive controls of the tests' "never served" and
    "back on stable" checks: the same probe, in the same window, did reach the candidate."""

    def __init__(self, clients: list[Client], base_url: str = PRODUCTION, every_s: float = 0.5) -> None:
        self._clients, self._base_url, self._every_s = clients, base_url, every_s
        self.seen: dict[str, Counter[str]] = {who.name: Counter() for who in clients}
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> TrafficSampler:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _sample(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            https = {who.name: await stack.enter_async_context(who.http()) for who in self._clients}
            while True:
                for who in self._clients:
                    self.seen[who.name][await who.ask(https[who.name], self._base_url)] += 1
                await asyncio.sleep(self._every_s)  # pacing of the samples, not a wait for anything


async def release_sampled(version: str, clients: list[Client], **kwargs) -> tuple[str, list[dict], TrafficSampler]:
    """`release(version, ...)` with `clients` sampled all along; the release id, its timeline and the samples."""
    async with TrafficSampler(clients) as sampled:
        rid, timeline = await asyncio.to_thread(release, version, **kwargs)
    return rid, timeline, sampled


@pytest.fixture(scope="module")
def canary() -> str:
    """The internal user's signed canary cookie for this module's tests."""
    return canary_cookie()


@pytest.fixture(scope="module")
def catalog_env() -> dict[str, str]:
    """Environment that picks the catalog a module's services use; modules with a catalog variant override it."""
    return {}


@pytest.fixture(scope="module")
async def services(settings, catalog_env):
    """The release stack of this module's environment, shared with the neighbouring modules of the same one."""
    return await shared_stack.for_module(settings, catalog_env)


API = "http://127.0.0.1:18800"


@pytest.fixture(scope="module")
async def api(services, catalog_env):
    """The API service (HTTP on 18800) beside the module's services; the OIDC provider is part of the stack."""
    svc = Service("api", {**catalog_env, "RG_HEALTH_PORT": "18611"}).start()

    async def up() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(f"{API}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_until(up, 60, "the API to answer")
    yield svc
    svc.stop()


@pytest.fixture
def stable_v1(services, catalog_env):
    """Each scenario starts from v1 as the stable version of staging and production."""
    subprocess.run(
        [sys.executable, "-m", "services.deployer.bootstrap", "--force", str(CANDIDATES / "shop-v1.json")],
        cwd=REPO,
        check=True,
        capture_output=True,
        env={**os.environ, **catalog_env},
    )
