"""Which deployment target an environment gets (the catalog names it, `local` by default), and the names the
kubernetes target gives Kubernetes: DNS-1123-safe, images only by digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_platform.targets.directory import TargetDirectory
from releasegate_platform.targets.kubernetes import (
    KubernetesTarget,
    Placement,
    UnsafeName,
    image_for,
    placement_for,
    workload_name,
)
from releasegate_platform.targets.port import TargetError
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

    def test_a_kubernetes_environment_without_a_kubeconfig_is_refused_with_the_setting_named(self, tmp_path: Path):
        from services.deployer.bootstrap import kubernetes_targets

        build = kubernetes_targets(DeployerSettings(kubeconfig=None), pool=None)  # type: ignore[arg-type]
        entry = catalog_with(tmp_path, {"production": KUBE}).get("shop")
        with pytest.raises(TargetError, match="RG_KUBECONFIG"):
            build("production", entry.target("production"))

    def test_a_kubeconfig_builds_a_kubernetes_adapter_placed_by_the_catalog(self, tmp_path: Path):
        from services.deployer.bootstrap import kubernetes_targets

        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
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
        build = kubernetes_targets(DeployerSettings(kubeconfig=kubeconfig), pool=None)  # type: ignore[arg-type]
        entry = catalog_with(tmp_path, {"production": KUBE}).get("shop")
        assert isinstance(build("production", entry.target("production")), KubernetesTarget)


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
