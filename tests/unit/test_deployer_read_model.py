"""The deployer's read model on a target that holds its own truth (Kubernetes): built from what the API server
reports, not from the deployer's tables (which hold no instance of a kubernetes environment)."""

from contracts.events import ObservedState
from services.deployer import read_model

DIGEST = {"v1": "sha256:" + "1" * 64, "v2": "sha256:" + "2" * 64, "v3": "sha256:" + "3" * 64}


def workload(version: str, ready: int, release: str | None = None) -> dict:
    return {
        "deployment": f"shop-{version}",
        "version": version,
        "digest": DIGEST[version],
        "release_id": release,
        "endpoint": f"http://shop-{version}.shop-production.svc:80",
        "replicas": 2,
        "ready": ready,
    }


def test_every_ready_version_serves_with_its_digest_weight_release_and_endpoint():
    seen = ObservedState(
        weights={"v1": 90, "v2": 10},
        instances=[workload("v1", 2), workload("v2", 1, "rel-7"), workload("v3", 0, "rel-8")],
        stable_version="v1",
    )
    state = read_model.observed("shop", "production", seen, ("v1", DIGEST["v1"]), sequence=4)
    assert (state.stable_version, state.stable_digest, state.sequence) == ("v1", DIGEST["v1"], 4)
    assert [(s.version, s.digest, s.weight, s.release_id) for s in state.serving] == [
        ("v1", DIGEST["v1"], 90, None),
        ("v2", DIGEST["v2"], 10, "rel-7"),
    ]  # v3 has no ready replica: it serves nobody
    assert state.serving[1].endpoints == ["http://shop-v2.shop-production.svc:80"]


def test_an_environment_before_its_first_release_has_no_stable_version_and_serves_nothing():
    state = read_model.observed("shop", "staging", ObservedState(weights={}), None, sequence=1)
    assert (state.stable_version, state.stable_digest, state.serving) == (None, None, [])
