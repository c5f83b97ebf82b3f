"""The real Kubernetes test cluster (deploy/k8s/cluster.sh: etcd, kube-apiserver with RBAC, controller-manager,
scheduler, kwok) for every test under tests/kubernetes, which all carry the `kubernetes` marker.

`cluster.sh up` is idempotent: when the cluster is healthy it returns at once; otherwise it builds (cached after the
first time), starts from an empty state and returns only once a Deployment can become Available. Three API
clients: `admin_api` (cluster-admin client certificate: set-up, cleanup, and checking what really happened),
`releasegate_api` (the deployer's ServiceAccount `releasegate`, bound only by the per-environment Role
releasegate-deployer) and `rollback_api` (the rollback service's ServiceAccount `releasegate-rollback`, bound only by
the per-environment Role releasegate-rollback)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "deploy" / "k8s" / "cluster.sh"
RUN = REPO / ".run" / "k8s"
ADMIN_KUBECONFIG = RUN / "admin.kubeconfig"
RELEASEGATE_KUBECONFIG = RUN / "releasegate.kubeconfig"
ROLLBACK_KUBECONFIG = RUN / "rollback.kubeconfig"
ENVIRONMENT_NAMESPACES = ("releasegate-staging", "releasegate-production")

T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.kubernetes)


@pytest.fixture(scope="session")
def k8s_cluster() -> Path:
    """Make sure the cluster is up (a cold build takes ~11 minutes once; a cold start ~20 s; a healthy cluster
    returns at once) and return the run directory holding its kubeconfigs."""
    try:
        done = subprocess.run(
            ["bash", str(CLUSTER), "up"], cwd=REPO, capture_output=True, text=True, timeout=1800, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"deploy/k8s/cluster.sh up did not finish in {exc.timeout}s", pytrace=False)
    if done.returncode != 0:
        pytest.fail(
            f"deploy/k8s/cluster.sh up failed (exit {done.returncode}); logs in .run/k8s/logs:\n{done.stderr[-4000:]}",
            pytrace=False,
        )
    return RUN


def _api_client(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="session")
def admin_api(k8s_cluster: Path) -> Iterator[client.ApiClient]:
    api = _api_client(ADMIN_KUBECONFIG)
    yield api
    api.close()


@pytest.fixture(scope="session")
def releasegate_api(k8s_cluster: Path) -> Iterator[client.ApiClient]:
    api = _api_client(RELEASEGATE_KUBECONFIG)
    yield api
    api.close()


@pytest.fixture(scope="session")
def rollback_api(k8s_cluster: Path) -> Iterator[client.ApiClient]:
    api = _api_client(ROLLBACK_KUBECONFIG)
    yield api
    api.close()


def poll(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
