"""Event contracts: CloudEvents encoding, validation errors with reasons, committed schemas in sync."""

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from contracts import generate
from contracts.cloudevents import ContractError, Envelope, decode, encode
from contracts.events import EVENT_TYPES, AbortRequested, CandidateSubmitted, KpiResult, KpiThreshold
from releasegate_platform.catalog import DETECTABLE_RATES, Catalog, CatalogError
from services.verifier.domain import PROPORTIONS

BLUE_GREEN = Path(__file__).resolve().parents[2] / "examples" / "catalog-blue-green"


def candidate_payload(**over):
    return {
        "release_id": "shop-v2-1",
        "service": "shop",
        "version": "v2",
        "artifact": {"digest": "sha256:" + "b" * 64, "uri": "store://x"},
        "source": {"repository": "r", "ref": "refs/heads/main", "commit": "c" * 40},
        "tests": {"passed": 1, "failed": 0},
        "author": "dev",
        **over,
    }


class TestCloudEventsOnKafka:
    def test_round_trip_keeps_attributes_key_and_trace(self):
        env = Envelope.new(
            CandidateSubmitted.model_validate(candidate_payload()),
            "ci",
            subject="shop-v2-1",
            tenant="acme",
            trace={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
        )
        key, value, headers = encode(env)
        back = decode(headers, value)
        assert key == b"shop-v2-1"
        assert (back.id, back.type, back.subject, back.tenant) == (env.id, env.type, "shop-v2-1", "acme")
        assert back.trace == env.trace and back.data == env.data
        assert dict(headers)["ce_type"] == b"dev.releasegate.candidate.submitted.v1"

    @pytest.mark.parametrize(
        "headers,value,reason",
        [
            ({"ce_id": "1", "ce_source": "s", "ce_type": "x"}, b"{}", "ce_specversion"),
            ({"ce_specversion": "1.0", "ce_source": "s", "ce_type": "x"}, b"{}", "ce_id"),
            (
                {
                    "ce_specversion": "1.0",
                    "ce_id": "1",
                    "ce_source": "s",
                    "ce_type": "dev.releasegate.candidate.submitted.v7",
                },
                b"{}",
                "unknown event type or schema version",
            ),
            (
                {
                    "ce_specversion": "1.0",
                    "ce_id": "1",
                    "ce_source": "s",
                    "ce_type": "dev.releasegate.abort.requested.v1",
                },
                b"{nope",
                "not valid JSON",
            ),
            (
                {
                    "ce_specversion": "1.0",
                    "ce_id": "1",
                    "ce_source": "s",
                    "ce_type": "dev.releasegate.abort.requested.v1",
                },
                b'{"release_id": "r"}',
                "actor: Field required",
            ),
        ],
    )
    def test_bad_records_are_refused_with_a_reason(self, headers, value, reason):
        with pytest.raises(ContractError, match=reason):
            decode(headers, value)

    def test_a_tag_is_not_an_artifact_digest(self):
        with pytest.raises(ValueError):
            from contracts.events import GateCheckRequested

            GateCheckRequested(
                release_id="r",
                step_id="s",
                service="shop",
                version="v2",
                digest="shop:latest",
                environment="staging",
                tests={"passed": 1, "failed": 0},
            )

    def test_unknown_fields_are_refused_not_ignored(self):
        with pytest.raises(ContractError, match="Extra inputs"):
            decode(
                {"ce_specversion": "1.0", "ce_id": "1", "ce_source": "s", "ce_type": AbortRequested.event_type},
                json.dumps({"release_id": "r", "actor": "a", "reason": "x", "force": True}).encode(),
            )

    def test_every_event_type_names_its_version(self):
        assert all(t.rsplit(".", 1)[1].startswith("v") for t in EVENT_TYPES)


class TestGeneratedDocuments:
    def test_committed_json_schemas_and_asyncapi_match_the_code(self):
        stale = [p.name for p, text in generate.rendered().items() if not p.is_file() or p.read_text() != text]
        assert stale == [], f"run `make schemas`: {stale}"

    def test_asyncapi_lists_the_public_topics(self):
        addresses = {c["address"] for c in generate.asyncapi()["channels"].values()}
        assert {"release.candidates", "release.status", "release.alerts", "release.deadletter"} <= addresses


class TestEvidenceNeeds:
    """A verdict's `needs_seconds` drives the coordinator's extension and canary raise: no infinity, no NaN, no
    absurd figure from a faulty or hostile verifier; and left out when unset, so a result serialises as before."""

    def result(self, **over) -> KpiResult:
        return KpiResult(
            name="checkout_success_rate", candidate=0.9, baseline=0.97, candidate_samples=12, baseline_samples=40,
            verdict="inconclusive", rule="not enough evidence", **over,
        )  # fmt: skip

    @pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, 1e300, "soon"])
    def test_an_impossible_need_is_refused(self, value):
        with pytest.raises(ValidationError, match="needs_seconds"):
            self.result(needs_seconds=value)

    def test_a_need_is_kept_and_an_unset_one_left_out(self):
        assert self.result(needs_seconds=171.5).model_dump()["needs_seconds"] == 171.5
        assert "needs_seconds" not in self.result().model_dump(mode="json")


class TestDetectionThresholds:
    """`detect` (the smallest drop of a rate to catch) and its `power`: refused where they mean nothing, and left
    out of a threshold that does not use them, so it serialises as before."""

    def test_power_without_detect_is_refused(self):
        with pytest.raises(ValidationError, match="give detect too"):
            KpiThreshold(min=0.5, power=0.9)
        assert KpiThreshold(min=0.5, detect=0.02, power=0.9).power == 0.9

    @pytest.mark.parametrize(
        "over", [{"detect": 0}, {"detect": 1}, {"detect": 0.02, "power": 0.4}, {"detect": 0.02, "power": 1}]
    )
    def test_out_of_range_detect_or_power_is_refused(self, over):
        with pytest.raises(ValidationError):
            KpiThreshold(min=0.5, **over)

    def test_unset_detect_and_power_are_left_out_of_the_serialised_threshold(self):
        plain = KpiThreshold(min=0.5)
        assert not {"detect", "power"} & plain.model_dump().keys()
        assert not {"detect", "power"} & json.loads(plain.model_dump_json()).keys()
        assert "power" not in KpiThreshold(min=0.5, detect=0.02).model_dump()
        stated = KpiThreshold(min=0.5, detect=0.02, power=0.8)
        assert (stated.model_dump()["detect"], stated.model_dump()["power"]) == (0.02, 0.8)
        assert KpiThreshold.model_validate_json(stated.model_dump_json()) == stated

    @staticmethod
    def catalog_with_kpis(tmp_path: Path, kpis: dict) -> Catalog:
        entry = yaml.safe_load((BLUE_GREEN / "shop.yaml").read_text())
        entry["kpis"] = kpis
        (tmp_path / "shop.yaml").write_text(yaml.safe_dump(entry))
        return Catalog(tmp_path)

    def test_the_catalog_accepts_detect_on_a_rate(self, tmp_path):
        kpis = {"checkout_success_rate": {"min": 0.85, "detect": 0.02, "power": 0.8}, "latency_p95_ms": {"max": 1500}}
        entry = self.catalog_with_kpis(tmp_path, kpis).get("shop")
        assert entry.kpis["checkout_success_rate"] == KpiThreshold(min=0.85, detect=0.02, power=0.8)

    def test_the_catalog_refuses_detect_on_what_is_not_a_rate_and_names_it(self, tmp_path):
        kpis = {"checkout_success_rate": {"min": 0.85, "detect": 0.02}, "latency_p95_ms": {"max": 1500, "detect": 0.1}}
        with pytest.raises(
            CatalogError, match=r"checkout_success_rate and payment_authorization_rate only; not on latency_p95_ms"
        ):
            self.catalog_with_kpis(tmp_path, kpis).get("shop")

    def test_the_catalog_detects_on_the_rates_the_verifier_tests_for_a_drop(self):
        assert DETECTABLE_RATES == PROPORTIONS
