"""The parity probes against the real stack: the gatekeeper's own role reads each shop database's engine version and
settings, its own Kafka principal the topic's configuration; a database that is down, or a principal without the
DescribeConfigs grant, is an error that blocks, never a passing guess."""

from __future__ import annotations

import asyncpg
import pytest

from releasegate_platform import parity, parity_probes, regional
from releasegate_platform.catalog import Catalog
from shop import build_bundles
from tests.conftest import REPO, as_principal

pytestmark = pytest.mark.integration


@pytest.fixture
def gatekeeper(settings):
    return as_principal(settings, "gatekeeper")


@pytest.fixture
def shop():
    return Catalog(REPO / "catalog").get("shop")


class TestProbes:
    async def test_the_gatekeeper_reads_both_databases_and_the_topic_as_itself(self, gatekeeper, shop, settings):
        staging, production = await parity_probes.measure(
            gatekeeper, shop, regional.load(build_bundles.bundle_files("v1"))
        )
        assert staging.errors == [] and production.errors == []
        conn = await asyncpg.connect(settings.role_dsn(settings.database_role(), "shop"))
        try:
            version, work_mem = await conn.fetchval("SHOW server_version"), await conn.fetchval("SHOW work_mem")
        finally:
            await conn.close()
        assert production.values["database.server_version"] == version
        assert production.values["database.work_mem"] == work_mem
        assert set(staging.values) >= {f"database.{s.lower()}" for s in parity_probes.DATABASE_SETTINGS}
        assert (
            production.values["kafka.shop.events.cleanup.policy"] == staging.values["kafka.shop.events.cleanup.policy"]
        )
        assert production.values["integration.eu.payment.contract"] == "2.4"

    async def test_the_stack_as_shipped_has_only_documented_differences(self, gatekeeper, shop):
        staging, production = await parity_probes.measure(
            gatekeeper, shop, regional.load(build_bundles.bundle_files("v1"))
        )
        report = parity.compare("shop", staging, production, parity.load_accepted(REPO / "deploy" / "parity.yaml"))
        assert not report.blocking, report.lines()
        assert {d.key for d in report.differences} >= {"deployment.strategy", "security.control.waf"}

    async def test_a_database_that_does_not_answer_is_an_error_naming_it(self, gatekeeper, shop, tmp_path):
        sources = parity_probes.Sources(
            environments_dir=REPO / "deploy" / "environments",
            edge_dir=tmp_path,
            databases={"staging": "postgresql://rg_gatekeeper@127.0.0.1:1/shop_staging"},
            topics={},
        )
        facts = await parity_probes.gather(gatekeeper, shop, "staging", sources, None)
        assert any("database unreachable" in e for e in facts.errors)
        assert not any(k.startswith("database.") for k in facts.values)
        report = parity.compare("shop", facts, parity.Facts("production", dict(facts.values)), [])
        assert report.blocking and report.differences == []

    async def test_a_principal_without_describe_configs_gets_an_error_not_a_value(self, settings):
        found, error = await parity_probes.topic_configs(as_principal(settings, "ci"), "shop.events")
        assert found == {} and error is not None and "cannot describe topic shop.events as ci" in error
