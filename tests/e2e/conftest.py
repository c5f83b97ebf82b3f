"""End-to-end harness: the six services and the shop team's verifiers as OS processes, synthetic shoppers as
traffic, a clean start."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest

from releasegate_cli import client
from tests.conftest import LOGS, REPO, Service, wait_until

SERVICES = ["coordinator", "gatekeeper", "dr_checker", "deployer", "verifier", "rollback"]
VERIFIERS = ["erp_export", "tax", "inventory_latency"]  # the catalog's required and advisory team verifiers
PRODUCTION, STAGING = "http://127.0.0.1:18080", "http://127.0.0.1:18081"
CANDIDATES = REPO / "examples" / "candidates"


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
    for who in approvers:
        approve(rid, who)
    return rid


def approve(rid: str, who: str, *, kind: str = "approval", reason: str = "reviewed the change") -> str:
    out = cli("approve", rid, "--reason", reason, "--key", str(KEYS / f"{who}.key"), "--kind", kind)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def operate(command: str, rid: str, reason: str, *args: str, who: str = "carol") -> subprocess.CompletedProcess:
    """`releasegate abort|pause|resume|promote`, signed with `who`'s demo key."""
    return cli(command, rid, "--reason", reason, "--key", str(KEYS / f"{who}.key"), *args)


def status(rid: str) -> dict:
    return json.loads(cli("status", rid, "--json").stdout)


def release(version: str, *, promoted: bool, timeout: float = 400,
            approvers: tuple[str, ...] = ()) -> tuple[str, list[dict]]:
    """Submit a candidate through the CLI, watch it to the end, check how it ended; its id and timeline."""
    rid = submit(version, approvers=approvers)
    watched = cli("watch", rid, "--timeout", str(timeout), timeout=timeout + 20)
    assert watched.returncode == (0 if promoted else 1), watched.stdout[-2000:]
    return rid, status(rid)["timeline"]


def prove_recovery(env: dict[str, str]) -> None:
    """v1 in place (so the shop schema exists), then a fresh backup and a passing restore drill, as an operator
    does before a day of releases: the DR check of tier-1 releases requires both."""
    run_env = {**os.environ, **env}
    for module, arg in (("services.deployer.bootstrap", str(CANDIDATES / "shop-v1.json")),
                        ("services.dr_checker.backup", "shop"), ("services.dr_checker.drill", "shop")):
        out = subprocess.run([sys.executable, "-m", module, arg], cwd=REPO, env=run_env, capture_output=True,
                             text=True)
        assert out.returncode == 0, f"{module}: {out.stdout}{out.stderr}"


def _shopper(target: str, cards: str, rate: int, tenants: str) -> subprocess.Popen:
    log = (LOGS / f"test-shopper-{cards}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "shop.shopper", "--target", target, "--rate", str(rate),
                             "--tenants", tenants, "--cards", cards, "--duration", "0"], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.asynccontextmanager
async def release_stack(settings, env: dict[str, str] | None = None):
    env = {"RG_CALENDAR_FILE": str(LOCAL_CALENDAR), **(env or {})}
    running = {name: Service(name, env).start() for name in SERVICES}
    running |= {name: Service(name, env, package="verifiers").start() for name in VERIFIERS}
    shoppers = [_shopper(PRODUCTION, "mixed", 16, "acme,globex,initech"), _shopper(STAGING, "visa", 6, "qa")]
    try:
        leftovers = await client.abort_in_flight(settings, "carol", "clean start for the end-to-end tests",
                                                 key=RELEASE_MANAGER_KEY)
        await wait_until(lambda: client.all_ended(settings, leftovers), 240, f"left-over releases {leftovers} to end")
        prove_recovery(env)
        yield running
    finally:
        for p in shoppers:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(15)
        for svc in running.values():
            svc.stop()


async def served(pool, version: str, rid: str, tenant: str | None = None) -> int:
    """Production requests (of `tenant`, if given) HAProxy logged as answered by `version` since the release
    began."""
    async with pool.acquire() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM http_samples WHERE environment = 'production' AND version = $1"
            " AND ($3::text IS NULL OR tenant = $3)"
            " AND at >= (SELECT created_at FROM sagas WHERE release_id = $2)", version, rid, tenant)


@pytest.fixture(scope="module")
def catalog_env() -> dict[str, str]:
    """Environment that picks the catalog a module's services use; modules with a catalog variant override it."""
    return {}


@pytest.fixture(scope="module")
async def services(settings, catalog_env):
    async with release_stack(settings, catalog_env) as running:
        yield running


@pytest.fixture
def stable_v1(services, catalog_env):
    """Each scenario starts from v1 as the stable version of staging and production."""
    subprocess.run([sys.executable, "-m", "services.deployer.bootstrap", "--force", str(CANDIDATES / "shop-v1.json")],
                   cwd=REPO, check=True, capture_output=True, env={**os.environ, **catalog_env})
