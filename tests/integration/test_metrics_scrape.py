"""Every running releasegate service answers GET /metrics on its health port with its own metrics, and the local
Prometheus scrapes them with the alerting rules loaded. The module starts the services as `make up` does
(`deploy/services.sh start`: the notifier on 18510, the API on 18511) and stops them after."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.events import ReleaseState
from tests.conftest import REPO, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def supervised_services():
    """The services as deploy/services.sh runs them (supervised, on their health ports), for this module only."""
    started = subprocess.run(["bash", "deploy/services.sh", "start"], cwd=REPO, capture_output=True, text=True)
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield
    finally:
        subprocess.run(["bash", "deploy/services.sh", "stop"], cwd=REPO, capture_output=True, text=True)


PROMETHEUS = "http://127.0.0.1:19090"
COMPONENTS = {
    18501: "coordinator",
    18502: "gatekeeper",
    18503: "dr-checker",
    18504: "deployer",
    18505: "verifier-business-kpis",
    18506: "rollback",
    18507: "verifier-erp-export",
    18508: "verifier-tax",
    18509: "verifier-inventory-latency",
    18510: "notifier",
    18511: "api",
    18512: "verifier-peak-load",
}
# what every process has from the runner once it is up (its samplers ran for this scrape)
GENERIC = {
    "releasegate_build_info",
    "releasegate_records_consumed",
    "releasegate_handler_duration_seconds",
    "releasegate_dead_letters",
    "releasegate_outbox_pending_rows",
    "releasegate_outbox_oldest_pending_age_seconds",
    "releasegate_consumer_lag_records",
}


def get(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.mark.parametrize(("port", "component"), sorted(COMPONENTS.items()))
def test_every_service_serves_its_metrics_on_its_health_port(port, component):
    content_type, text = get(f"http://127.0.0.1:{port}/metrics")
    assert content_type.startswith("text/plain; version=")
    found = families(text)
    assert GENERIC <= set(found), f"{component} lacks {GENERIC - set(found)}"
    (info,) = found["releasegate_build_info"].samples
    assert info.labels["component"] == component
    pending = [s for s in found["releasegate_outbox_pending_rows"].samples if s.labels["producer"] == component]
    # the API keeps no state and has no outbox (runner.Runtime.outbox)
    assert bool(pending) == (component != "api"), f"{component}'s outbox backlog sampled: {pending}"
    errors = found.get("releasegate_metrics_sample_errors")
    assert errors is None or not any(e.value for e in errors.samples), f"a sampler of {component} failed: see its log"


async def test_the_coordinator_reports_releases_and_required_verifiers_from_its_tables():
    found = families(get("http://127.0.0.1:18501/metrics")[1])
    states = {s.labels["state"] for s in found["releasegate_releases"].samples}
    assert states == {state.value for state in ReleaseState}

    async def verifiers_alive() -> (
        bool
    ):  # once the coordinator has read their first heartbeats (a fresh stack has none before)
        samples = families(get("http://127.0.0.1:18501/metrics")[1])["releasegate_verifier_alive"].samples
        alive = {(s.labels["verifier"], s.labels["service"]): s.value for s in samples}
        return alive.get(("business-kpis", "shop")) == 1 and alive.get(("erp-export", "shop")) == 1

    await wait_until(verifiers_alive, 60, "the coordinator reporting the shop's required verifiers alive")


async def test_prometheus_scrapes_every_service_and_loaded_the_rules():
    async def all_up():
        _, body = get(f"{PROMETHEUS}/api/v1/query?query=up%7Bjob%3D%22releasegate%22%7D")
        up = {r["metric"]["component"]: r["value"][1] for r in json.loads(body)["data"]["result"]}
        return up if up == {c: "1" for c in COMPONENTS.values()} else None

    await wait_until(all_up, 60, "Prometheus scraping every releasegate service")
    _, body = get(f"{PROMETHEUS}/api/v1/rules")
    alerts = {r["name"] for g in json.loads(body)["data"]["groups"] for r in g["rules"]}
    assert {
        "ServiceDown",
        "ReleaseStuckInStep",
        "DeadLettersRising",
        "RequiredVerifierNotAlive",
        "OutboxLagHigh",
        "OutboxEventRefused",
    } <= alerts
