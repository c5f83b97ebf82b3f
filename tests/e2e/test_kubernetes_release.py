"""End to end on the kubernetes target (catalog variant `tests/kubernetes/catalog`: staging and production on the
test cluster of deploy/k8s/cluster.sh): every service as its own OS process, the deployer acting as releasegate's
ServiceAccount and the rollback service as its own (releasegate-rollback, which may not create anything). A good
canary is promoted and a bad one rolled back; fake Pods serve no traffic, so the verdicts come from a verifier the
test feeds (tests/kubernetes/catalog/verdict.py). What runs and how traffic is weighed is read through the API
server as the cluster admin, all along the release."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.conftest import REPO, Service
from tests.e2e.conftest import CANDIDATES, cli, release, submit

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.kubernetes]

CATALOG = REPO / "tests" / "kubernetes" / "catalog"
K8S = REPO / ".run" / "k8s"
IMAGE = "registry.example/shop"
PRODUCTION, STAGING = "releasegate-production", "releasegate-staging"


def digest_of(version: str) -> str:
    return json.loads((CANDIDATES / f"shop-{version}.json").read_text())["artifact"]["digest"]


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("verdicts") / "verdicts.json"
    path.write_text("{}")
    return path


@pytest.fixture(scope="module")
def catalog_env(verdicts: Path) -> dict[str, str]:
    assert (K8S / "ready").is_file(), "the kubernetes test cluster is not up: deploy/k8s/cluster.sh up"
    return {
        "RG_CATALOG_DIR": str(CATALOG),
        # every service gets the same environment; each reads only its own identity's kubeconfig
        "RG_KUBECONFIG": str(K8S / "releasegate.kubeconfig"),  # the deployer
        "RG_ROLLBACK_KUBECONFIG": str(K8S / "rollback.kubeconfig"),  # the rollback service
        "RG_TEST_VERDICTS": str(verdicts),
    }


@pytest.fixture(scope="module")
def fed_verifier(services, catalog_env):
    """The test's verifier in place of the shop team's `tax` (stopped here, so only one answers as `tax`)."""
    services["tax"].stop()
    verifier = Service("verdict", catalog_env, package="tests.kubernetes.catalog").start()
    yield verifier
    verifier.stop()


@pytest.fixture(scope="module")
def admin() -> Cluster:
    return Cluster(config.new_client_from_config(config_file=str(K8S / "admin.kubeconfig")))


class Cluster:
    """What the API server holds for the shop, read as the cluster admin."""

    def __init__(self, api: client.ApiClient) -> None:
        self.apps, self.custom = client.AppsV1Api(api), client.CustomObjectsApi(api)

    def state(self, namespace: str) -> dict[str, Any]:
        deployments = self.apps.list_namespaced_deployment(namespace, label_selector="app.kubernetes.io/name=shop")
        by_name = {d.metadata.name: d.metadata.annotations["releasegate.dev/version"] for d in deployments.items}
        try:
            route = self.custom.get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", namespace, "httproutes", "shop"
            )
        except ApiException as exc:
            assert exc.status == 404
            route = {"spec": {"rules": []}}
        rules = route["spec"]["rules"]
        matched = [r for r in rules if any(m.get("headers") for m in r.get("matches", []))]
        default = next((r for r in rules if r not in matched), {"backendRefs": []})
        return {
            "ready": {by_name[d.metadata.name]: d.status.ready_replicas or 0 for d in deployments.items},
            "images": {by_name[d.metadata.name]: d.spec.template.spec.containers[0].image for d in deployments.items},
            "weights": {by_name.get(r["name"], r["name"]): r["weight"] for r in default["backendRefs"]},
            "tenants": sorted(
                h["value"] for r in matched for m in r["matches"] for h in m["headers"] if h["name"] == "X-Tenant"
            ),
        }


class Sampler:
    """Polls the production namespace while a release runs and keeps every distinct state it saw, in order."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.seen, self._task = cluster, [], None

    async def __aenter__(self) -> Sampler:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *_: object) -> None:
        self._task.cancel()

    async def _poll(self) -> None:
        while True:
            state = await asyncio.to_thread(self.cluster.state, PRODUCTION)
            if not self.seen or self.seen[-1] != state:
                self.seen.append(state)
            await asyncio.sleep(0.25)


@pytest.fixture
def v1_on_kubernetes(services, fed_verifier, stable_v1, admin):
    """v1 stable in both namespaces (the bootstrap ran on the kubernetes target), all traffic on it."""
    for namespace in (STAGING, PRODUCTION):
        state = admin.state(namespace)
        assert state["ready"] == {"v1": 2} and state["weights"] == {"v1": 100}, (namespace, state)
        assert state["images"] == {"v1": f"{IMAGE}@{digest_of('v1')}"}


class TestKubernetesRelease:
    async def test_a_good_canary_is_promoted_step_by_step_on_the_http_route(self, v1_on_kubernetes, admin, verdicts):
        verdicts.write_text(json.dumps({}))
        async with Sampler(admin) as sampled:
            rid, timeline = await asyncio.to_thread(release, "v2", promoted=True)
        weights = [s["weights"] for s in sampled.seen]
        # the candidate beside stable first for the internal tenant only, then the catalog's canary steps
        assert any(s["tenants"] == ["initech"] and s["weights"].get("v2") == 0 for s in sampled.seen), sampled.seen
        for step in (10, 50):
            assert {"v1": 100 - step, "v2": step} in weights, weights
        final = admin.state(PRODUCTION)
        assert final == {
            "ready": {"v2": 2},
            "images": {"v2": f"{IMAGE}@{digest_of('v2')}"},
            "weights": {"v2": 100},
            "tenants": [],
        }
        assert admin.state(STAGING)["weights"] == {"v2": 100}
        observed = [t["evidence"]["observed"]["weights"] for t in timeline if (t.get("evidence") or {}).get("observed")]
        assert {"v1": 90, "v2": 10} in observed and {"v2": 100} in observed

    async def test_a_bad_canary_is_rolled_back_to_stable_on_the_http_route(self, v1_on_kubernetes, admin, verdicts):
        verdicts.write_text(json.dumps({"v3/production": "fail"}))
        async with Sampler(admin) as sampled:
            rid = submit("v3", approvers=("alice", "bob"))
            watched = await asyncio.to_thread(cli, "watch", rid, "--timeout", "300", timeout=320)
        assert watched.returncode == 1, watched.stdout[-2000:]
        assert any(s["ready"].get("v3") for s in sampled.seen), "v3 never ran beside v1"
        assert admin.state(PRODUCTION) == {
            "ready": {"v1": 2},
            "images": {"v1": f"{IMAGE}@{digest_of('v1')}"},
            "weights": {"v1": 100},
            "tenants": [],
        }
