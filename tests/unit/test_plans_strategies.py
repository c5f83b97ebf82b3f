"""Plans as the strategies build them: every step that changes something carries its named compensation from the
start, the registry knows every name, and the catalog's strategy picks the plan module."""

from pathlib import Path

import pytest

from releasegate_platform.catalog import Catalog
from services.coordinator import compensation, plans

REPO = Path(__file__).resolve().parents[2]
CANARY = Catalog(REPO / "catalog").get("shop")
EXAMPLES = {
    "blue-green": Catalog(REPO / "examples" / "catalog-blue-green").get("shop"),
    "rolling": Catalog(REPO / "examples" / "catalog-rolling").get("shop"),
    "tenant-phased": Catalog(REPO / "examples" / "catalog-tenant-phased").get("shop"),
    "canary": CANARY,
}


class TestStrategies:
    def test_each_strategy_of_the_catalog_has_its_plan_module(self):
        assert set(plans.STRATEGIES) == {"canary", "blue-green", "rolling", "tenant-phased"}

    @pytest.mark.parametrize("strategy", sorted(EXAMPLES))
    def test_the_catalogs_strategy_builds_its_plan_between_the_common_steps(self, strategy):
        entry = EXAMPLES[strategy]
        assert entry.rollout.strategy == strategy
        ids = [s.id for s in plans.build_plan(entry)]
        assert ids[0] == "gate-staging" and ids[-2:] == ["finalize-production", "finalize-staging"]
        middle = [s.id for s in plans.STRATEGIES[strategy](entry)]
        start = ids.index(middle[0])
        assert ids[start : start + len(middle)] == middle

    def test_an_unknown_strategy_is_refused_by_name(self):
        entry = CANARY.model_copy(update={"rollout": CANARY.rollout.model_copy(update={"strategy": "big-bang"})})
        with pytest.raises(plans.UnknownStrategy, match="big-bang"):
            plans.build_plan(entry)


class TestNamedCompensations:
    @pytest.mark.parametrize("strategy", sorted(EXAMPLES))
    def test_every_deploy_step_but_finalize_carries_a_registered_compensation_of_its_environment(self, strategy):
        for step in plans.build_plan(EXAMPLES[strategy]):
            if step.kind == "deploy" and step.action.value != "finalize":
                assert step.compensation is not None, step.id
                assert step.compensation.endswith(f"-{step.environment}")
                compensation.registered(step.compensation)
            else:
                assert step.compensation is None, step.id

    def test_a_canary_shift_is_undone_by_restoring_production_traffic(self):
        named = {s.id: s.compensation for s in plans.build_plan(CANARY)}
        assert named["canary-50"] == "restore-traffic-production"
        assert named["deploy-staging"] == "restore-traffic-staging"

    def test_a_rolling_batch_is_undone_by_the_deployer_starting_stable_instances(self):
        named = {s.id: s.compensation for s in plans.build_plan(EXAMPLES["rolling"])}
        assert named["roll-1"] == "redeploy-stable-production"

    def test_a_data_rewriting_migration_in_production_is_undone_by_the_backup_point(self):
        rewrite = [{"name": "0003_backfill.sql", "kind": "expand", "rewrites_data": True}]
        expand = [{"name": "0004_add_column.sql", "kind": "expand"}]
        assert compensation.for_migration("production", rewrite) == "restore-data-production"
        assert compensation.for_migration("production", expand) == "restore-traffic-production"
        assert compensation.for_migration("staging", rewrite) == "restore-traffic-staging"

    def test_a_name_nobody_registered_is_refused(self):
        with pytest.raises(compensation.UnknownCompensation, match="reboot-production"):
            compensation.registered("reboot-production")
