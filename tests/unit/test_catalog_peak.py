"""The catalog's rules on `peak_readiness` (the load gate, verifiers/peak_load): an entry whose gate could not
finish, or that nothing would run, is refused with the reason."""

from pathlib import Path

import pytest
import yaml

from releasegate_platform.catalog import Catalog, CatalogError

SHOP = Path(__file__).resolve().parents[2] / "catalog" / "shop.yaml"


class TestPeakReadinessInTheCatalog:
    def test_the_shops_entry_declares_the_gate_without_a_window(self):
        peak = Catalog(SHOP.parent).get("shop").peak_readiness
        assert peak is not None and peak.when == "peak_preparation" and not peak.can_run

    def test_the_catalog_refuses_a_staging_window_too_short_for_the_gate(self, tmp_path):
        entry = yaml.safe_load(SHOP.read_text())
        entry["peak_readiness"]["when"] = "always"
        (tmp_path / "shop.yaml").write_text(yaml.safe_dump(entry))
        with pytest.raises(CatalogError, match=r"the staging window \(8s\) must be at least 36s"):
            Catalog(tmp_path).get("shop")
        entry["verification"]["staging_window_seconds"] = 36
        entry["verification"]["by_environment"]["staging"]["required"] = ["business-kpis"]
        (tmp_path / "shop.yaml").write_text(yaml.safe_dump(entry))
        with pytest.raises(CatalogError, match="needs the `peak-load` verifier at staging"):
            Catalog(tmp_path).get("shop")
        entry["verification"]["by_environment"]["staging"]["advisory"] = ["peak-load"]
        (tmp_path / "shop.yaml").write_text(yaml.safe_dump(entry))
        assert Catalog(tmp_path).get("shop").peak_readiness.when == "always"
