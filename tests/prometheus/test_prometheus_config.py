"""The Prometheus configuration releasegate ships: the alerting rules pass their promtool unit tests, both scrape
configurations (native and docker-compose) load with the rules, and the Grafana dashboard asks only for metrics
releasegate or the shop exports, in PromQL Prometheus parses. Needs `promtool` (Debian's prometheus package,
installed by `deploy/stack.sh install`), no running stack."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from string import Template

import pytest
import yaml

from releasegate_platform.catalog import Catalog

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "releasegate.json"
EXPORTERS = [REPO / "releasegate_runtime" / "metrics.py", REPO / "shop" / "bundle_src" / "storefront" / "metrics.py"]
HEALTH_PORTS = range(18501, 18513)
# series Prometheus makes itself, and the suffixes a histogram's samples carry
BUILT_IN = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "changes", "histogram_quantile",
    "or", "and", "unless", "on", "ignoring", "group_left", "group_right", "vector", "label_values", "offset", "bool",
}  # fmt: skip


def promtool(*args: str, cwd: Path = REPO) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: `deploy/stack.sh install` installs Debian's prometheus package", False)
    done = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def exported_metrics() -> set[str]:
    return {name for path in EXPORTERS for name in re.findall(r'"((?:releasegate|shop)_[a-z_]+)"', path.read_text())}


def metrics_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or label names."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_matchers = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_matchers)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", re.sub(r"\[[^\]]*\]", "", without_groupings)))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d+|e\d+", n)}


def known(name: str, exported: set[str]) -> bool:
    base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
    return name in BUILT_IN or name in exported or base in exported


def dashboard_exprs(dashboard: dict) -> list[str]:
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    annotations = [a for a in dashboard["annotations"]["list"] if "expr" in a]
    return [t["expr"] for p in panels for t in p["targets"]] + [a["expr"] for a in annotations]


def as_plain_promql(expr: str) -> str:
    """Grafana's variables replaced by what Prometheus would be sent."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$service", ".*")
        .replace("$environment", ".*")
    )


class TestAlertingRules:
    def test_the_rules_load(self):
        assert "SUCCESS: 6 rules found" in promtool("check", "rules", str(PROMETHEUS / "rules.yml"))

    def test_each_alert_fires_when_its_condition_holds_and_stays_quiet_otherwise(self):
        assert "SUCCESS" in promtool("test", "rules", "rules.test.yml", cwd=PROMETHEUS)

    def test_every_alert_has_a_unit_test(self):
        rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
        tests = yaml.safe_load((PROMETHEUS / "rules.test.yml").read_text())
        alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
        tested = {a["alertname"] for t in tests["tests"] for a in t["alert_rule_test"] if a["exp_alerts"]}
        assert (
            alerts
            == tested
            == {
                "ServiceDown",
                "ReleaseStuckInStep",
                "DeadLettersRising",
                "RequiredVerifierNotAlive",
                "OutboxLagHigh",
                "OutboxEventRefused",
            }
        )

    def test_the_rules_ask_only_for_metrics_releasegate_exports(self):
        rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
        exported = exported_metrics()
        for rule in (r for g in rules["groups"] for r in g["rules"]):
            unknown = {m for m in metrics_in(rule["expr"]) if not known(m, exported)}
            assert not unknown, f"{rule['alert']} asks for {unknown}, which nothing exports"


class TestScrapeConfigs:
    def test_the_native_config_as_the_stack_renders_it_loads_with_the_rules(self, tmp_path):
        template = (PROMETHEUS / "prometheus.native.yml").read_text()
        rendered = template.replace("@PROM_RUN_DIR@", str(tmp_path)).replace("@ROOT_DIR@", str(REPO))
        assert "@" not in rendered.replace("@PROM_RUN_DIR@", ""), "a placeholder deploy/stack.sh does not render"
        (tmp_path / "targets").mkdir()
        (tmp_path / "targets-releasegate").mkdir()
        (tmp_path / "prometheus.yml").write_text(rendered)
        out = promtool("check", "config", str(tmp_path / "prometheus.yml"))
        assert "SUCCESS: 1 rule files found" in out

    def test_the_compose_config_loads_with_the_rules_mounted_beside_it(self, tmp_path):
        for name in ("prometheus.yml", "rules.yml"):
            shutil.copy(PROMETHEUS / name, tmp_path / name)
        assert "SUCCESS: 1 rule files found" in promtool("check", "config", str(tmp_path / "prometheus.yml"))

    def test_compose_scrapes_every_service_health_port_with_its_component(self):
        scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
        (job,) = [j for j in scrape if j["job_name"] == "releasegate"]
        ports = {
            int(t.rsplit(":", 1)[1]): s["labels"]["component"] for s in job["static_configs"] for t in s["targets"]
        }
        assert_one_component_per_port(ports)

    @pytest.mark.parametrize("instances", [1, 3])
    def test_the_native_stack_scrapes_every_instance_services_sh_starts(self, tmp_path, instances):
        scrape = yaml.safe_load((PROMETHEUS / "prometheus.native.yml").read_text())["scrape_configs"]
        (job,) = [j for j in scrape if j["job_name"] == "releasegate"]
        assert job["file_sd_configs"][0]["files"] == ["@PROM_RUN_DIR@/targets-releasegate/*.json"]
        written = subprocess.run(
            ["bash", "deploy/services.sh", "targets", str(tmp_path)],
            cwd=REPO, capture_output=True, text=True, env={**os.environ, "RG_INSTANCES": str(instances)},
        )  # fmt: skip
        assert written.returncode == 0, written.stderr
        assert [p.name for p in tmp_path.glob("*.json")] == ["releasegate.json"]
        groups = json.loads((tmp_path / "releasegate.json").read_text())
        ports = {int(t.rsplit(":", 1)[1]): g["labels"] for g in groups for t in g["targets"]}
        assert len(ports) == len(HEALTH_PORTS) + (instances - 1) * (len(HEALTH_PORTS) - 1)  # one API
        first = {port: labels["component"] for port, labels in ports.items() if port in HEALTH_PORTS}
        assert_one_component_per_port(first)
        further = [labels for port, labels in ports.items() if port not in HEALTH_PORTS]
        if instances == 3:
            assert ports[18521] == {"component": "coordinator", "process": "rg-coordinator-2"}
            assert ports[18541] == {"component": "coordinator", "process": "rg-coordinator-3"}
        assert {labels["component"] for labels in further} <= set(first.values()) - {"api"}


def assert_one_component_per_port(ports: dict[int, str]) -> None:
    assert sorted(ports) == list(HEALTH_PORTS)
    assert ports[18501] == "coordinator" and ports[18510] == "notifier" and ports[18511] == "api"
    assert ports[18505] == "verifier-business-kpis" and ports[18507] == "verifier-erp-export"
    assert len(set(ports.values())) == len(ports)


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


class TestDashboard:
    def test_it_is_a_current_grafana_dashboard_on_a_chosen_prometheus(self, dashboard):
        assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] == "releasegate"
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        for panel in (p for p in dashboard["panels"] if p["type"] != "row"):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]

    def test_panels_do_not_overlap(self, dashboard):
        taken: set[tuple[int, int]] = set()
        for panel in dashboard["panels"]:
            g = panel["gridPos"]
            cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert g["x"] + g["w"] <= 24 and not cells & taken, panel["title"]
            taken |= cells

    def test_it_shows_releases_steps_verdicts_dead_letters_lag_and_the_shops_kpis(self, dashboard):
        asked = {m for e in dashboard_exprs(dashboard) for m in metrics_in(e)}
        for metric in (
            "releasegate_releases",
            "releasegate_step_duration_seconds_bucket",
            "releasegate_verdicts_total",
            "releasegate_dead_letters_total",
            "releasegate_outbox_oldest_pending_age_seconds",
            "releasegate_consumer_lag_records",
            "shop_checkouts_total",
            "shop_http_request_duration_seconds_bucket",
        ):
            assert metric in asked, metric

    def test_deployments_are_annotated_from_traffic_and_release_changes(self, dashboard):
        annotations = {a["name"]: a for a in dashboard["annotations"]["list"] if "expr" in a}
        assert "releasegate_traffic_weight" in annotations["Traffic shifts"]["expr"]
        assert "releasegate_release_transitions_total" in annotations["Release outcomes"]["expr"]
        assert all(a["datasource"]["uid"] == "${datasource}" and a["enable"] for a in annotations.values())

    def test_every_metric_it_asks_for_is_exported(self, dashboard):
        exported = exported_metrics()
        unknown = {m for e in dashboard_exprs(dashboard) for m in metrics_in(e) if not known(m, exported)}
        assert not unknown, f"the dashboard asks for {unknown}, which neither releasegate nor the shop exports"

    def test_every_query_parses_as_promql(self, dashboard, tmp_path):
        exprs = [as_plain_promql(e) for e in dashboard_exprs(dashboard)]
        rules = {
            "groups": [{"name": "dashboard", "rules": [{"record": f"q:{i}", "expr": e} for i, e in enumerate(exprs)]}]
        }
        (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
        assert f"SUCCESS: {len(exprs)} rules found" in promtool("check", "rules", str(tmp_path / "queries.yml"))


class TestTheShopsPromqlKpi:
    """The catalog's `http_5xx_ratio`, evaluated by Prometheus's own engine (promtool) on recorded series."""

    @pytest.mark.parametrize(
        ("served", "expected"),
        [
            # a new instance whose only requests were health checks answered 503 (the database restarting): no
            # customer traffic, so no data (inconclusive), not a 100% error ratio that fails the release
            ({("/health", "503"): "0+1x8", ("/metrics", "200"): "0+1x8"}, []),
            # customer requests: 2 of every 7 answered 500; the health checks beside them do not count
            ({("/cart", "200"): "0+5x8", ("/checkout", "500"): "0+2x8", ("/health", "503"): "0+9x8"}, [2 / 7]),
        ],
    )
    def test_only_customer_requests_count(self, tmp_path, served, expected):
        query = Catalog(REPO / "catalog").get("shop").prometheus["http_5xx_ratio"].query
        expr = Template(query).safe_substitute(version="v2", environment="staging", window=60)
        tests = {
            "rule_files": [],
            "evaluation_interval": "15s",
            "tests": [
                {
                    "interval": "15s",
                    "input_series": [
                        {
                            "series": f'shop_http_requests_total{{environment="staging", version="v2", route="{route}",'
                            f' status="{status}"}}',
                            "values": values,
                        }
                        for (route, status), values in served.items()
                    ],
                    "promql_expr_test": [
                        {
                            "expr": expr,
                            "eval_time": "120s",
                            "exp_samples": [{"labels": "{}", "value": v} for v in expected],
                        }
                    ],
                }
            ],
        }
        (tmp_path / "kpi.test.yml").write_text(yaml.safe_dump(tests))
        assert "SUCCESS" in promtool("test", "rules", "kpi.test.yml", cwd=tmp_path)
