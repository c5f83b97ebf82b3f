"""Synthetic journeys come from the catalog's allow-list: a command names a journey, the catalog entry of the
request's service says which `module:function` that is (in an allowed package), and a name it does not list is
refused with the reason; no module named by a command is ever imported."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from contracts.events import Verdict
from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_sdk.schedule import Finish, Window, after_error
from releasegate_sdk.testing import fake_request
from releasegate_sdk.types import RETRYABLE
from services.verifier import synthetic
from services.verifier.domain import Counts, VerifierError
from services.verifier.handlers import BusinessKpis

REPO = Path(__file__).resolve().parents[2]
BLUE_GREEN = REPO / "examples" / "catalog-blue-green"


def catalog_with(tmp_path: Path, journeys: dict, journey: str = "checkout", **catalog_options) -> Catalog:
    entry = yaml.safe_load((BLUE_GREEN / "shop.yaml").read_text())
    entry["journeys"], entry["synthetic"]["journey"] = journeys, journey
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(entry))
    return Catalog(tmp_path, **catalog_options)


class TestCatalogAllowList:
    def test_the_blue_green_example_names_an_allow_listed_journey(self):
        entry = Catalog(BLUE_GREEN).get("shop")
        assert entry.synthetic is not None and entry.synthetic.journey == "checkout"
        assert entry.journeys == {"checkout": "shop.synthetic:journey"}

    def test_a_synthetic_journey_missing_from_the_allow_list_is_refused(self, tmp_path):
        with pytest.raises(
            CatalogError,
            match=r"synthetic.journey 'browse' is not in the entry's `journeys` "
            r"allow-list \(checkout\)",
        ):
            catalog_with(tmp_path, {"checkout": "shop.synthetic:journey"}, journey="browse").get("shop")

    @pytest.mark.parametrize("target", ["os:system", "subprocess:run", "shopping.evil:journey", "builtins:exec"])
    def test_a_journey_outside_the_allowed_packages_is_refused(self, tmp_path, target):
        with pytest.raises(CatalogError, match="outside the packages journeys may come from"):
            catalog_with(tmp_path, {"checkout": target}).get("shop")

    @pytest.mark.parametrize(
        "target",
        [
            "shop.synthetic",
            "shop.synthetic:journey; import os",
            "shop/../x:y",
            "shop.synthetic:journey:x",
            " shop.synthetic:journey",
            "shop..x:y",
        ],
    )
    def test_a_journey_that_is_not_module_colon_function_is_refused(self, tmp_path, target):
        with pytest.raises(CatalogError, match="must be `package.module:function`"):
            catalog_with(tmp_path, {"checkout": target}).get("shop")

    @pytest.mark.parametrize("name", ["Checkout", "check out", "checkout;x", ""])
    def test_journey_names_are_plain_names(self, tmp_path, name):
        with pytest.raises(CatalogError, match="journeys"):
            catalog_with(tmp_path, {name: "shop.synthetic:journey"}, journey="checkout").get("shop")

    def test_the_allowed_packages_are_configurable(self, tmp_path):
        catalog = catalog_with(
            tmp_path, {"checkout": "team_journeys.shop:journey"}, journey_packages=("team_journeys",)
        )
        assert catalog.get("shop").journeys == {"checkout": "team_journeys.shop:journey"}
        with pytest.raises(CatalogError, match="outside the packages"):
            Catalog(tmp_path).get("shop")

    @pytest.mark.parametrize("service", ["../shop", "SHOP", "shöp", "shop;x"])
    def test_service_names_are_checked_before_a_file_is_read(self, service):
        with pytest.raises(CatalogError, match="invalid service name"):
            Catalog(BLUE_GREEN).get(service)


class TestVerifierResolvesNames:
    def test_an_allow_listed_name_resolves_to_the_catalogs_function(self):
        from shop.synthetic import journey

        assert synthetic.CatalogJourneys(Catalog(BLUE_GREEN))("shop", "checkout") is journey

    def test_an_unknown_name_is_refused_and_nothing_is_imported(self, monkeypatch):
        imported: list[str] = []
        monkeypatch.setattr(synthetic.importlib, "import_module", imported.append)
        with pytest.raises(
            VerifierError,
            match=r"journey 'os' is not in the journeys allow-list of shop's "
            r"catalog entry \(checkout\); refusing to run it",
        ):
            synthetic.CatalogJourneys(Catalog(BLUE_GREEN))("shop", "os")
        assert imported == []

    def test_a_service_without_a_catalog_entry_has_no_journeys(self, tmp_path):
        with pytest.raises(VerifierError, match="unknown service 'cart'"):
            synthetic.CatalogJourneys(Catalog(tmp_path))("cart", "checkout")

    def test_a_verifier_wired_without_a_catalog_refuses_every_journey(self):
        with pytest.raises(VerifierError, match="no journey allow-list"):
            synthetic.no_journeys("shop", "checkout")


@dataclass
class JourneyResult:
    tenant: str
    success: bool = True
    reason: str | None = None
    steps: list = field(default_factory=list)


class FakeStore:
    async def counts(self, *args, **kwargs) -> Counts:
        return Counts()

    async def targets(self, service, environment, version) -> list[str]:
        return ["http://127.0.0.1:1"]


SPEC = {"journey": "checkout", "tenants": ["acme"], "profiles": ["visa"], "journeys_per_tenant": 2}


class TestPreviewVerdicts:
    async def test_the_preview_runs_the_journey_the_catalog_names(self):
        ran: list[tuple[str, str]] = []

        async def journey(client, base_url, tenant, profile):
            ran.append((tenant, profile))
            return JourneyResult(tenant)

        check = BusinessKpis(
            FakeStore(), lambda: None, journeys=lambda service, name: {("shop", "checkout"): journey}[(service, name)]
        ).check
        result = await check(fake_request(service="shop", synthetic=SPEC))
        assert result.verdict is Verdict.PASS and ran == [("acme", "visa"), ("acme", "visa")]

    async def test_an_unknown_journey_ends_the_preview_inconclusive_with_the_reason(self):
        check = BusinessKpis(FakeStore(), lambda: None, journeys=synthetic.CatalogJourneys(Catalog(BLUE_GREEN))).check
        req = fake_request(service="shop", synthetic={**SPEC, "journey": "smuggled"})
        with pytest.raises(VerifierError) as refused:
            await check(req)
        # what the SDK makes of it: not retried, an inconclusive verdict at once (never a pass), reason included
        outcome = after_error(
            Window(req.window_start, req.window_end, req.deadline),
            refused.value,
            attempt=1,
            retryable=isinstance(refused.value, RETRYABLE),
            now=req.window_end,
        )
        assert isinstance(outcome, Finish) and outcome.result.verdict is Verdict.INCONCLUSIVE
        assert "journey 'smuggled' is not in the journeys allow-list" in outcome.result.reason
