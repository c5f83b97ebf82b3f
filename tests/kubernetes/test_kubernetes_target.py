"""The kubernetes deployment target against the real API server, acting as releasegate's ServiceAccount (least
privilege) and checked as the cluster admin: versions run side by side as Deployments with images by digest,
traffic moves through the HTTPRoute's backend weights, tenants and the canary cookie through its matches; every
step re-applied changes nothing; unsafe names and undigested images are refused before any API call. The rollback
service's handler takes a canary back to stable through the same adapter acting as its own, narrower,
ServiceAccount (releasegate-rollback)."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from contracts.events import (
    AlertRaised,
    DeployAction,
    DeployFinished,
    DeployRequested,
    RollbackFinished,
    RollbackRequested,
)
from releasegate_platform import supply_chain
from releasegate_platform.catalog import Catalog
from releasegate_platform.targets.kubernetes import (
    CANARY_COOKIE,
    KubernetesTarget,
    KubernetesTargetError,
    Placement,
    UnsafeName,
    workload_name,
)
from releasegate_platform.targets.port import Unsupported
from services.deployer.handlers import Deployer
from services.rollback.handlers import Rollback
from services.rollback.ledger import Begun

pytestmark = [pytest.mark.kubernetes]

NAMESPACE = "releasegate-staging"
IMAGE = "registry.example/shop"
D1 = "sha256:" + hashlib.sha256(b"shop 1.0").hexdigest()
D2 = "sha256:" + hashlib.sha256(b"shop 2.0").hexdigest()
V1, V2 = "v1.0", "v2.0"  # versions with dots: workloads get DNS-1123-safe names, the real version stays in labels


def placement(namespace: str = NAMESPACE) -> Placement:
    return Placement(namespace=namespace, gateway="releasegate", image=IMAGE)


@pytest.fixture
def service(admin_api: client.ApiClient):
    name = f"shop-{secrets.token_hex(3)}"
    yield name
    apps, core, custom = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api), client.CustomObjectsApi(admin_api)
    for version in (V1, V2):
        for delete in (apps.delete_namespaced_deployment, core.delete_namespaced_service):
            try:
                delete(workload_name(name, version), NAMESPACE)
            except ApiException as exc:
                assert exc.status == 404
    try:
        custom.delete_namespaced_custom_object("gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", name)
    except ApiException as exc:
        assert exc.status == 404


@pytest.fixture
def target(releasegate_api: client.ApiClient) -> KubernetesTarget:
    return KubernetesTarget(releasegate_api, lambda _service, _environment: placement(), rollout_timeout=60)


def headers(rule: dict[str, Any]) -> list[dict[str, Any]]:
    """The header matches of an HTTPRoute rule (the API server gives a rule without matches a `/` path match)."""
    return [h for m in rule.get("matches", []) for h in m.get("headers", [])]


class Admin:
    """What the API server holds, read as the cluster admin (not through the adapter under test)."""

    def __init__(self, api: client.ApiClient, service: str) -> None:
        self.apps, self.core = client.AppsV1Api(api), client.CoreV1Api(api)
        self.custom, self.service = client.CustomObjectsApi(api), service

    def deployment(self, version: str) -> Any:
        return self.apps.read_namespaced_deployment(workload_name(self.service, version), NAMESPACE)

    def route(self) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", self.service
        )

    def weights(self) -> dict[str, int]:
        default = next(r for r in self.route()["spec"]["rules"] if not headers(r))
        return {ref["name"]: ref["weight"] for ref in default["backendRefs"]}

    def gone(self, version: str) -> bool:
        name = workload_name(self.service, version)
        for read in (self.apps.read_namespaced_deployment, self.core.read_namespaced_service):
            try:
                read(name, NAMESPACE)
                return False
            except ApiException as exc:
                assert exc.status == 404
        return True

    def versions(self) -> tuple[str, str]:
        return self.deployment(V1).metadata.resource_version, self.route()["metadata"]["resourceVersion"]


class TestARelease:
    async def test_two_versions_side_by_side_weighted_routed_observed_and_retired(
        self, target: KubernetesTarget, admin_api: client.ApiClient, service: str
    ):
        admin = Admin(admin_api, service)
        env = "staging"
        await target.set_stable(service, env, V1, D1)
        assert await target.run_version(service, env, V1, D1, None, 2) == 2
        await target.shift(service, env, {V1: 100})

        d1 = admin.deployment(V1)
        assert d1.spec.template.spec.containers[0].image == f"{IMAGE}@{D1}"
        assert d1.metadata.labels["app.kubernetes.io/name"] == service
        assert d1.metadata.labels["releasegate.dev/version"] == V1
        assert d1.metadata.labels["releasegate.dev/digest"] == D1.removeprefix("sha256:")[:32]
        assert d1.metadata.annotations["releasegate.dev/digest"] == D1
        assert d1.status.ready_replicas == 2 and d1.status.observed_generation >= d1.metadata.generation
        assert d1.metadata.name == workload_name(service, V1) and "." not in d1.metadata.name
        assert admin.weights() == {workload_name(service, V1): 100}
        assert await target.stable(service, env) == (V1, D1)

        assert await target.run_version(service, env, V2, D2, "rel-k8s-1", 1) == 1
        d2 = admin.deployment(V2)
        assert d2.spec.template.spec.containers[0].image == f"{IMAGE}@{D2}"
        assert d2.metadata.labels["releasegate.dev/release"] == "rel-k8s-1"
        assert d2.spec.template.metadata.labels["releasegate.dev/version"] == V2
        assert admin.deployment(V1).status.ready_replicas == 2  # stable untouched

        for weight in (10, 50, 100):
            await target.shift(service, env, {V2: weight, V1: 100 - weight})
            assert admin.weights() == {workload_name(service, V1): 100 - weight, workload_name(service, V2): weight}
            observed = await target.observe(service, env)
            assert observed.weights == {V1: 100 - weight, V2: weight}

        await target.shift(service, env, {V2: 10, V1: 90})
        await target.route_tenants(service, env, V2, ["acme"])
        rules = admin.route()["spec"]["rules"]
        to_v2 = [{"group": "", "kind": "Service", "name": workload_name(service, V2), "port": 80, "weight": 1}]
        tenant_rule = next(
            r for r in rules if any(h["name"] == "X-Tenant" for m in r.get("matches", []) for h in m["headers"])
        )
        assert [m["headers"] for m in tenant_rule["matches"]] == [
            [{"type": "Exact", "name": "X-Tenant", "value": "acme"}]
        ]
        assert tenant_rule["backendRefs"] == to_v2
        cookie_rule = next(
            r for r in rules if any(h["name"] == "Cookie" for m in r.get("matches", []) for h in m["headers"])
        )
        assert cookie_rule["matches"][0]["headers"] == [
            {"type": "RegularExpression", "name": "Cookie", "value": CANARY_COOKIE}
        ]
        assert cookie_rule["backendRefs"] == to_v2
        observed = await target.observe(service, env)
        assert observed.tenants_on_candidate == ["acme"] and observed.stable_version == V1
        assert {i["version"]: i["ready"] for i in observed.instances} == {V1: 2, V2: 1}
        assert {i["version"]: i["image"] for i in observed.instances} == {V1: f"{IMAGE}@{D1}", V2: f"{IMAGE}@{D2}"}

        await target.clear_tenant_routes(service, env)
        assert [headers(r) for r in admin.route()["spec"]["rules"]] == [[]]

        await target.shift(service, env, {V2: 100, V1: 0})
        await target.retire(service, env, V1)
        await target.set_stable(service, env, V2, D2)
        assert admin.gone(V1)
        assert admin.weights() == {workload_name(service, V2): 100}
        assert await target.stable(service, env) == (V2, D2)
        assert await target.versions(service, env) == {V2: 1}


class TestServerSideApply:
    async def test_reapplying_a_step_changes_nothing(
        self, target: KubernetesTarget, admin_api: client.ApiClient, service: str
    ):
        admin = Admin(admin_api, service)
        await target.set_stable(service, "staging", V1, D1)
        await target.run_version(service, "staging", V1, D1, None, 2)
        await target.run_version(service, "staging", V2, D2, "rel-k8s-2", 1)
        await target.shift(service, "staging", {V2: 50, V1: 50})
        await target.route_tenants(service, "staging", V2, ["acme"])
        before, generation = admin.versions(), admin.deployment(V1).metadata.generation

        await target.run_version(service, "staging", V1, D1, None, 2)
        await target.shift(service, "staging", {V2: 50, V1: 50})
        await target.route_tenants(service, "staging", V2, ["acme"])
        await target.set_stable(service, "staging", V1, D1)

        assert admin.versions() == before and admin.deployment(V1).metadata.generation == generation
        managers = {m.manager for m in admin.deployment(V1).metadata.managed_fields if m.operation == "Apply"}
        assert managers == {"releasegate"}

    async def test_scaling_waits_for_the_real_rollout(
        self, target: KubernetesTarget, admin_api: client.ApiClient, service: str
    ):
        admin = Admin(admin_api, service)
        await target.run_version(service, "staging", V1, D1, None, 1)
        await target.scale(service, "staging", V1, 3)
        status = admin.deployment(V1).status
        assert (status.ready_replicas, status.updated_replicas, status.available_replicas) == (3, 3, 3)
        await target.scale(service, "staging", V1, 0)
        assert await target.versions(service, "staging") == {V1: 0}


class TestRefusals:
    @pytest.fixture
    def api_calls(self, releasegate_api: client.ApiClient, monkeypatch) -> list[tuple]:
        calls: list[tuple] = []
        real = releasegate_api.call_api

        def counted(*args, **kwargs):
            calls.append(args[:2])
            return real(*args, **kwargs)

        monkeypatch.setattr(releasegate_api, "call_api", counted)
        return calls

    @pytest.mark.parametrize("service", ["Shop", "shop_eu", "shop.eu", "-shop", "shop;rm", "s" * 64])
    async def test_a_service_name_kubernetes_cannot_carry_is_refused_before_any_api_call(
        self, target: KubernetesTarget, api_calls: list, service: str
    ):
        with pytest.raises(UnsafeName):
            await target.run_version(service, "staging", V1, D1, None, 1)
        assert api_calls == []

    @pytest.mark.parametrize("version", ["v1-", "V1", "v1 ", "v1/../x", "a" * 64])
    async def test_a_version_kubernetes_cannot_label_is_refused_before_any_api_call(
        self, target: KubernetesTarget, api_calls: list, version: str
    ):
        with pytest.raises(UnsafeName):
            await target.run_version("shop", "staging", version, D1, None, 1)
        with pytest.raises(UnsafeName):
            await target.shift("shop", "staging", {version: 100})
        assert api_calls == []

    @pytest.mark.parametrize("digest", ["latest", "sha256:abc", "v1.0", "sha512:" + "a" * 128, D1.upper()])
    async def test_an_image_without_a_sha256_digest_is_refused_before_any_api_call(
        self, target: KubernetesTarget, api_calls: list, digest: str
    ):
        with pytest.raises(UnsafeName, match="digest"):
            await target.run_version("shop", "staging", V1, digest, None, 1)
        assert api_calls == []

    async def test_a_tenant_that_is_no_hostname_label_is_refused_before_any_api_call(
        self, target: KubernetesTarget, api_calls: list
    ):
        with pytest.raises(UnsafeName):
            await target.route_tenants("shop", "staging", V2, ["acme", "evil.example"])
        assert api_calls == []

    def test_an_image_repository_with_a_tag_is_refused(self):
        with pytest.raises(UnsafeName):
            Placement(namespace=NAMESPACE, gateway="releasegate", image="registry.example/shop:latest")

    async def test_maintenance_mode_is_refused_as_unsupported(self, target: KubernetesTarget, api_calls: list):
        with pytest.raises(Unsupported, match="not supported on the kubernetes target"):
            await target.maintenance("shop", "staging", on=True)
        assert api_calls == []


class TestLeastPrivilege:
    async def test_outside_its_namespaces_releasegate_is_forbidden_with_a_clear_error(
        self, releasegate_api: client.ApiClient, admin_api: client.ApiClient
    ):
        outside = KubernetesTarget(releasegate_api, lambda _s, _e: placement("default"), rollout_timeout=10)
        with pytest.raises(KubernetesTargetError, match=r"\(403\)") as refused:
            await outside.run_version("shop", "staging", V1, D1, None, 1)
        assert "forbidden" in str(refused.value).lower()
        with pytest.raises(ApiException) as missing:
            client.AppsV1Api(admin_api).read_namespaced_deployment(workload_name("shop", V1), "default")
        assert missing.value.status == 404


# --- the deployer's handler driving the kubernetes target -------------------------------------------------------
# The API server is real; the step store and the bundle store are in memory (their PostgreSQL and filesystem
# adapters are tested elsewhere): what is shown here is what each deploy action does to a Kubernetes environment.

BUILDER = "https://ci.example/builders/release@v1"
SOURCE = "github.com/example/shop"


class MemorySteps:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], DeployFinished] = {}

    async def get(self, release_id: str, step_id: str) -> DeployFinished | None:
        return self.rows.get((release_id, step_id))

    async def put(self, result: DeployFinished) -> None:
        self.rows.setdefault((result.release_id, result.step_id), result)


class VerifiedBundles:
    async def unpack(self, digest: str) -> tuple[Path, dict[str, Any]]:
        return Path("/nonexistent") / digest, {}


class NoMigrations:
    async def migrate(self, environment: str, folder: Path, release_id: str) -> tuple[list[str], list[str]]:
        raise AssertionError("no migration in these releases")

    async def server_version(self, environment: str) -> str:
        raise AssertionError("no migration in these releases")


@pytest.fixture
def signer(tmp_path: Path, service: str) -> tuple[supply_chain.TrustRoot, Path]:
    private, public = supply_chain.keygen(tmp_path / "keys", "builder")
    root = tmp_path / "trust-root.yaml"
    root.write_text(
        yaml.safe_dump(
            {
                "version": 3,
                "builders": {BUILDER: {"threshold": 1, "keys": [json.loads(public.read_text())]}},
                "services": {service: {"sources": [{"repository": SOURCE, "refs": ["refs/heads/main"]}]}},
            }
        )
    )
    return supply_chain.TrustRoot.load(root), private


class Release:
    """One release of `service` to the staging namespace, step by step through the deployer's handler."""

    def __init__(self, target: KubernetesTarget, service: str, signer: tuple[supply_chain.TrustRoot, Path]) -> None:
        self.service, (root, self.key) = service, signer
        self.deployer = Deployer(
            lambda _service, _environment: target,
            VerifiedBundles(),
            NoMigrations(),
            MemorySteps(),
            lambda: root,
            admission=None,  # type: ignore[arg-type]  # deploy() is called directly
            reply=None,  # type: ignore[arg-type]
        )

    def provenance(self, digest: str) -> dict[str, Any]:
        statement = supply_chain.provenance_statement(
            artifact_name=f"{self.service}.tar.gz",
            digest=digest,
            builder_id=BUILDER,
            build_type="https://ci.example/build-types/image@v1",
            repository=SOURCE,
            ref="refs/heads/main",
            commit="3f1c9a7be2d04c58a1e6b7f90d2c4e8a6b1f3d57",
            dependencies=[],
            invocation_id="run-1",
            started_on=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
        )
        return supply_chain.sign(statement, [self.key])

    async def step(self, action: DeployAction, step: str, **fields: Any) -> DeployFinished:
        args: dict[str, Any] = {
            "release_id": "rel-k8s-e2e",
            "step_id": step,
            "service": self.service,
            "version": V2,
            "digest": D2,
            "environment": "staging",
            "action": action,
            "weight": 0,
            "instances": 2,
        }
        args.update(fields)
        args.setdefault("attestation", self.provenance(args["digest"]))
        result = await self.deployer.deploy(DeployRequested(**args))
        assert result.succeeded, result.reason
        return result


@pytest.fixture
async def v1_stable(target: KubernetesTarget, service: str) -> str:
    """v1.0 the stable version of staging with 2 replicas and all traffic, as the bootstrap leaves it."""
    await target.set_stable(service, "staging", V1, D1)
    await target.run_version(service, "staging", V1, D1, None, 2)
    await target.shift(service, "staging", {V1: 100})
    return service


class TestTheDeployerReleasesToKubernetes:
    async def test_a_canary_is_routed_weighted_and_finalized(self, target, v1_stable, admin_api, signer):
        service, admin = v1_stable, Admin(admin_api, v1_stable)
        release = Release(target, service, signer)
        w1, w2 = workload_name(service, V1), workload_name(service, V2)
        started = await release.step(DeployAction.START, "canary-0", weight=0)
        assert admin.deployment(V2).status.ready_replicas == 2 and admin.weights() == {w1: 100, w2: 0}
        assert admin.deployment(V2).spec.template.spec.containers[0].image == f"{IMAGE}@{D2}"
        assert started.observed is not None and started.observed.weights == {V1: 100, V2: 0}
        await release.step(DeployAction.ROUTE, "internal", tenants=["initech"])
        assert any(h["value"] == "initech" for r in admin.route()["spec"]["rules"] for h in headers(r))
        for weight in (10, 50, 100):
            shifted = await release.step(DeployAction.SHIFT, f"canary-{weight}", weight=weight)
            assert admin.weights() == {w1: 100 - weight, w2: weight}
            assert shifted.observed is not None and shifted.observed.weights == {V1: 100 - weight, V2: weight}
        final = await release.step(DeployAction.FINALIZE, "finalize", weight=100)
        assert admin.gone(V1) and admin.weights() == {w2: 100}
        assert [headers(r) for r in admin.route()["spec"]["rules"]] == [[]]
        assert final.observed is not None and final.observed.stable_version == V2
        assert await target.stable(service, "staging") == (V2, D2)

    async def test_a_rolling_update_weighs_by_ready_replicas_and_its_restore_brings_stable_back(
        self, target, v1_stable, admin_api, signer
    ):
        service, admin = v1_stable, Admin(admin_api, v1_stable)
        release = Release(target, service, signer)
        w1, w2 = workload_name(service, V1), workload_name(service, V2)
        await release.step(DeployAction.ROLL, "roll-1", batch=1, batch_size=1)
        assert (admin.deployment(V2).status.ready_replicas, admin.deployment(V1).status.ready_replicas) == (1, 1)
        assert admin.weights() == {w1: 50, w2: 50}
        restored = await release.step(DeployAction.RESTORE, "restore", batch_size=1, attestation=None)
        assert admin.deployment(V1).status.ready_replicas == 2 and admin.gone(V2)
        assert admin.weights() == {w1: 100}
        assert restored.observed is not None and restored.observed.weights == {V1: 100}

    async def test_an_artifact_whose_provenance_names_another_digest_never_reaches_the_cluster(
        self, target, v1_stable, admin_api, signer
    ):
        service, admin = v1_stable, Admin(admin_api, v1_stable)
        release = Release(target, service, signer)
        with pytest.raises(AssertionError, match=f"is not the artifact {D2}"):
            await release.step(DeployAction.START, "canary-0", weight=10, attestation=release.provenance(D1))
        assert admin.gone(V2) and admin.weights() == {workload_name(service, V1): 100}


# --- the rollback service's handler on the kubernetes target, as its own ServiceAccount --------------------------
# Only `restore_traffic` (a data restore is refused on this target before any call: tests/unit/test_restore_ledger.py);
# the ledger is in memory, the API server real, the identity releasegate-rollback (no create, no patch of a
# Deployment): what the handler does must fit in that Role.


class MemoryLedger:
    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, str], RollbackFinished] = {}

    async def begin(self, release_id: str, step_id: str) -> Begun:
        return Begun(self.outcomes.get((release_id, step_id)), 1)

    async def finish(self, result: RollbackFinished, alert: AlertRaised | None) -> RollbackFinished:
        return self.outcomes.setdefault((result.release_id, result.step_id), result)


@pytest.fixture
def rollback(rollback_api: client.ApiClient) -> Rollback:
    as_rollback = KubernetesTarget(rollback_api, lambda _service, _environment: placement(), rollout_timeout=60)
    return Rollback(
        catalog=Catalog(Path(__file__).resolve().parents[2] / "catalog"),
        targets=lambda _service, _environment: as_rollback,
        dumps=None,  # type: ignore[arg-type]  # restore_traffic only
        events=None,  # type: ignore[arg-type]
        database=None,  # type: ignore[arg-type]
        replayer_of=None,  # type: ignore[arg-type]
        ledger=MemoryLedger(),
    )


def compensation(service: str, step_id: str = "compensate:staging") -> RollbackRequested:
    return RollbackRequested(
        release_id="shop-v2-1a2b3c4d",
        step_id=step_id,
        compensation="restore_traffic",
        service=service,
        environment="staging",
        candidate_version=V2,
    )


class TestTheRollbackServiceRestoresTrafficAsItsOwnServiceAccount:
    async def test_a_canary_is_taken_back_to_stable_and_retired(
        self, target: KubernetesTarget, v1_stable: str, admin_api: client.ApiClient, rollback: Rollback
    ):
        service, admin = v1_stable, Admin(admin_api, v1_stable)
        await target.run_version(service, "staging", V2, D2, "shop-v2-1a2b3c4d", 1)  # as the deployer
        await target.shift(service, "staging", {V2: 10, V1: 90})
        await target.route_tenants(service, "staging", V2, ["acme"])

        result = await rollback.restore(compensation(service))
        assert result.succeeded, result.reason
        assert "tenants acme routed back" in result.reason and f"retired {V2}" in result.reason
        assert admin.weights() == {workload_name(service, V1): 100}
        assert [headers(r) for r in admin.route()["spec"]["rules"]] == [[]]
        assert admin.gone(V2) and admin.deployment(V1).status.ready_replicas == 2
        assert result.observed is not None and result.observed.weights == {V1: 100}
        assert result.observed.stable_version == V1

        again = await rollback.restore(compensation(service, step_id="compensate-again:staging"))
        assert again.succeeded and "retired nothing (already clean)" in again.reason, again.reason

    async def test_where_the_deployer_made_no_route_the_rollback_creates_nothing(
        self, service: str, admin_api: client.ApiClient, rollback: Rollback
    ):
        result = await rollback.restore(compensation(service))
        assert not result.succeeded and "no recorded stable version" in result.reason, result.reason
        with pytest.raises(ApiException) as missing:
            Admin(admin_api, service).route()
        assert missing.value.status == 404


class TestErrors:
    async def test_an_api_server_that_cannot_be_reached_is_a_step_error_naming_what_was_tried(self):
        unreachable = client.Configuration()
        unreachable.host, unreachable.verify_ssl, unreachable.retries = "https://127.0.0.1:1", False, 0
        target = KubernetesTarget(client.ApiClient(unreachable), lambda _s, _e: placement(), rollout_timeout=5)
        with pytest.raises(KubernetesTargetError, match="unreachable while trying to list Deployments of shop"):
            await target.versions("shop", "staging")
