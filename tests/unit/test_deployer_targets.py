"""Which deployment target an environment gets (the catalog names it, `local` by default), how a kubernetes one
reaches the API server (RG_KUBECONFIG, else in a Pod its own ServiceAccount), and the names the kubernetes target
gives Kubernetes: DNS-1123-safe, images only by digest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s_client

from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_platform.targets import directory as targets_directory
from releasegate_platform.targets.directory import TargetDirectory, api_client, kubernetes_targets
from releasegate_platform.targets.kubernetes import (
    KubernetesTarget,
    Placement,
    UnsafeName,
    image_for,
    placement_for,
    workload_name,
)
from releasegate_platform.targets.local import LocalDeploymentTarget
from releasegate_platform.targets.port import TargetError
from services.deployer import bootstrap
from services.deployer.adapters.stable_mirror import MirroredKubernetesTarget
from services.deployer.config import DeployerSettings

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + hashlib.sha256(b"shop").hexdigest()


def catalog_with(tmp_path: Path, targets: dict | None) -> Catalog:
    entry = yaml.safe_load((REPO / "catalog" / "shop.yaml").read_text())
    if targets is not None:
        entry["targets"] = targets
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(entry))
    return Catalog(tmp_path)


KUBE = {"kind": "kubernetes", "gateway": "public", "image": "registry.example/shop"}


def kubeconfig_file(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


class TestTheCatalogNamesEachEnvironmentsTarget:
    def test_an_entry_that_names_no_target_runs_everything_locally(self):
        entry = Catalog(REPO / "catalog").get("shop")
        assert {env: entry.target(env).kind for env in entry.environments} == {
            "staging": "local",
            "production": "local",
        }

    def test_kubernetes_placement_defaults_to_a_namespace_per_environment(self, tmp_path: Path):
        entry = catalog_with(tmp_path, {"production": KUBE}).get("shop")
        assert entry.target("staging").kind == "local"
        placement = placement_for(entry.target("production"), "production")
        assert (placement.namespace, placement.gateway, placement.image) == (
            "releasegate-production",
            "public",
            "registry.example/shop",
        )

    def test_a_kubernetes_target_without_gateway_or_image_is_refused(self, tmp_path: Path):
        with pytest.raises(CatalogError, match="needs `gateway` and `image`"):
            catalog_with(tmp_path, {"production": {"kind": "kubernetes", "gateway": "public"}}).get("shop")

    def test_a_target_for_an_environment_the_service_does_not_have_is_refused(self, tmp_path: Path):
        with pytest.raises(CatalogError, match="the entry does not have: qa"):
            catalog_with(tmp_path, {"qa": KUBE}).get("shop")


class TestTheTargetDirectory:
    def test_local_environments_get_the_local_adapter_and_kubernetes_ones_theirs(self, tmp_path: Path):
        local, built = object(), []

        def kubernetes(environment, spec):
            built.append((environment, spec.kind))
            return ("kubernetes", environment)

        directory = TargetDirectory(catalog_with(tmp_path, {"production": KUBE}), local, kubernetes)  # type: ignore[arg-type]
        assert directory("shop", "staging") is local
        assert directory("shop", "production") == ("kubernetes", "production")
        directory("shop", "production")
        assert built == [("production", "kubernetes")]  # one adapter per environment, built once

    def test_an_unknown_service_fails_the_step_with_the_catalogs_reason(self, tmp_path: Path):
        directory = TargetDirectory(catalog_with(tmp_path, None), object(), lambda e, s: None)  # type: ignore[arg-type]
        with pytest.raises(TargetError, match="unknown service 'cart'"):
            directory("cart", "production")

    def test_a_kubernetes_environment_without_a_kubeconfig_outside_a_pod_is_refused_with_the_setting_named(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        build = kubernetes_targets(None)
        entry = catalog_with(tmp_path, {"production": KUBE}).get("shop")
        with pytest.raises(TargetError, match="production deploys to kubernetes but RG_KUBECONFIG names no kubeconfig"):
            build("production", entry.target("production"))

    def test_a_kubeconfig_builds_a_kubernetes_adapter_placed_by_the_catalog(self, tmp_path: Path):
        build = kubernetes_targets(kubeconfig_file(tmp_path))
        entry = catalog_with(tmp_path, {"production": KUBE}).get("shop")
        assert isinstance(build("production", entry.target("production")), KubernetesTarget)

    def test_the_deployers_directory_mirrors_kubernetes_stable_versions_and_launches_local_instances(
        self, tmp_path: Path
    ):
        catalog_with(tmp_path, {"production": KUBE})
        settings = DeployerSettings(
            catalog_dir=tmp_path, run_dir=tmp_path / "run", kubeconfig=kubeconfig_file(tmp_path)
        )
        directory, starter = bootstrap.targets(settings, pool=None)  # type: ignore[arg-type]
        assert isinstance(directory("shop", "production"), MirroredKubernetesTarget)
        local = directory("shop", "staging")
        assert isinstance(local, LocalDeploymentTarget) and local._starter == starter.start


class TestTheApiClient:
    """RG_KUBECONFIG when set; else, inside a Pod (KUBERNETES_SERVICE_HOST set), the Pod's own ServiceAccount
    (in-cluster configuration); else a refusal naming the setting."""

    @pytest.fixture
    def loaded(self) -> list[k8s_client.ApiClient]:
        return []

    @pytest.fixture
    def in_cluster(self, loaded: list[k8s_client.ApiClient]) -> Callable[[], k8s_client.ApiClient]:
        def load() -> k8s_client.ApiClient:
            configuration = k8s_client.Configuration()
            configuration.host = "https://10.96.0.1:443"
            loaded.append(k8s_client.ApiClient(configuration))
            return loaded[-1]

        return load

    def test_inside_a_pod_without_a_kubeconfig_the_pods_service_account_is_used(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loaded, in_cluster
    ):
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        build = kubernetes_targets(None, connect=partial(api_client, in_cluster=in_cluster))
        entry = catalog_with(tmp_path, {"production": KUBE}).get("shop")
        assert isinstance(build("production", entry.target("production")), KubernetesTarget)
        build("staging", entry.target("production"))
        assert [api.configuration.host for api in loaded] == ["https://10.96.0.1:443"]  # one client for all

    def test_a_kubeconfig_wins_over_the_pods_own_service_account(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loaded, in_cluster
    ):
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        api = api_client(kubeconfig_file(tmp_path), in_cluster=in_cluster)
        assert api.configuration.host == "https://127.0.0.1:1" and loaded == []

    def test_outside_a_pod_without_a_kubeconfig_nothing_is_loaded(
        self, monkeypatch: pytest.MonkeyPatch, loaded, in_cluster
    ):
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        with pytest.raises(TargetError, match="RG_KUBECONFIG names no kubeconfig and this process runs in no Pod"):
            api_client(None, in_cluster=in_cluster)
        assert loaded == []

    def test_a_pod_without_its_token_is_refused_with_the_reason(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
        incluster = targets_directory.k8s_config.incluster_config
        monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(tmp_path / "no-token"))
        with pytest.raises(TargetError, match="in-cluster configuration unusable: Service token file does not exist"):
            api_client(None)


class TestKubernetesNames:
    def test_a_version_with_dots_gets_a_dns_label_that_keeps_similar_versions_apart(self):
        dotted, dashed = workload_name("shop", "v1.2"), workload_name("shop", "v1-2")
        assert dashed == "shop-v1-2" and dotted.startswith("shop-v1-2-") and dotted != dashed
        assert "." not in dotted and len(dotted) <= 63

    @pytest.mark.parametrize("service", ["Shop", "shop_eu", "1shop", "shop-", "s" * 64])
    def test_a_service_that_is_no_dns_label_is_refused(self, service: str):
        with pytest.raises(UnsafeName, match="DNS-1123"):
            workload_name(service, "v1")

    def test_a_name_too_long_once_joined_is_refused(self):
        with pytest.raises(UnsafeName):
            workload_name("s" * 40, "v" * 30)

    def test_images_are_referenced_by_digest_only(self):
        assert image_for("registry.example/shop", DIGEST) == f"registry.example/shop@{DIGEST}"
        for digest in ("latest", "sha256:1234", f"{DIGEST}x"):
            with pytest.raises(UnsafeName, match="digest"):
                image_for("registry.example/shop", digest)

    @pytest.mark.parametrize(
        "image", ["registry.example/shop:latest", f"registry.example/shop@{DIGEST}", "shop", "Registry/shop"]
    )
    def test_an_image_repository_carrying_a_tag_or_digest_is_refused(self, image: str):
        with pytest.raises(UnsafeName, match="image repository"):
            Placement(namespace="releasegate-production", gateway="public", image=image)

    def test_a_registry_with_a_port_is_a_repository(self):
        assert Placement(namespace="ns", gateway="gw", image="127.0.0.1:5000/team/shop").image
