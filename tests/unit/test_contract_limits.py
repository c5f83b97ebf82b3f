"""Contracts refuse what cannot be right: names with a shape, bounded sizes, and a decode that turns every hostile
record into a ContractError naming what is wrong, while every event the code really produces still passes."""

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from contracts import names
from contracts.cloudevents import ContractError, Envelope, decode, encode
from contracts.events import (
    CandidateSubmitted,
    DeadLetter,
    DRCheckRequested,
    Name,
    ReleaseStatusChanged,
    SignedApproval,
    VerificationRequested,
)
from releasegate_platform.catalog import Catalog
from services.coordinator import saga

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "b" * 64
CANDIDATES = sorted((REPO / "examples" / "candidates").glob("*.json"))
CATALOGS = [REPO / "catalog", *sorted(p for p in (REPO / "examples").glob("catalog-*") if p.is_dir())]


def headers(event_type: str, **extra: str) -> dict[str, str]:
    return {
        "ce_specversion": "1.0",
        "ce_id": "4f1c2d7e-0b7a-4a57-9d0e-3c2b1a0f9e8d",
        "ce_source": "releasegate/cli",
        "ce_type": event_type,
        **extra,
    }


def candidate(**over) -> dict:
    return {
        "release_id": "shop-v2-1a2b3c4d",
        "service": "shop",
        "version": "v2",
        "artifact": {"digest": DIGEST, "uri": "store://sha256/" + "b" * 64},
        "source": {"repository": "github.com/releasegate/sample-shop", "ref": "refs/heads/main", "commit": "c" * 40},
        "tests": {"passed": 1, "failed": 0},
        "author": "dev",
        **over,
    }


def dr_check(**over) -> dict:
    return {
        "release_id": "shop-v2-1a2b3c4d",
        "step_id": "dr-check",
        "service": "shop",
        "version": "v2",
        "digest": DIGEST,
        "database": "shop",
        "rpo_seconds": 3600,
        **over,
    }


def verification(**over) -> dict:
    return {
        "release_id": "shop-v2-1a2b3c4d",
        "step_id": "verify-preview",
        "service": "shop",
        "environment": "production",
        "candidate_version": "v2",
        "stable_version": "v1",
        "window_seconds": 10,
        "min_samples": 15,
        "thresholds": {"checkout_success_rate": {"min": 0.85}},
        **over,
    }


def deploy(**over) -> dict:
    return {
        "release_id": "shop-v2-1a2b3c4d",
        "step_id": "wave-early",
        "service": "shop",
        "version": "v2",
        "digest": DIGEST,
        "environment": "production",
        "action": "route",
        "weight": 0,
        **over,
    }


CANDIDATE = CandidateSubmitted.event_type
DR = DRCheckRequested.event_type
VERIFY = VerificationRequested.event_type
DEPLOY = "dev.releasegate.deploy.requested.v1"


def refusal(hdrs, value) -> str:
    with pytest.raises(ContractError) as caught:
        decode(hdrs, value)
    return str(caught.value)


class TestNamesAreRefusedUnlessTheyHaveTheirShape:
    @pytest.mark.parametrize(
        "event_type,payload,field",
        [
            (CANDIDATE, candidate(service="shop;disable server be/x"), "service"),
            (CANDIDATE, candidate(version="../x"), "version"),
            (CANDIDATE, candidate(version="V2"), "version"),
            (CANDIDATE, candidate(release_id="shop v2"), "release_id"),
            (CANDIDATE, candidate(artifact={"digest": "shop:latest", "uri": "store://x"}), "artifact.digest"),
            (CANDIDATE, candidate(artifact={"digest": "sha256:" + "B" * 64, "uri": "store://x"}), "artifact.digest"),
            (CANDIDATE, candidate(artifact={"digest": "md5:" + "b" * 32, "uri": "store://x"}), "artifact.digest"),
            (DR, dr_check(database="shop?host=elsewhere"), "database"),
            (DR, dr_check(database="postgresql://u:p@evil/shop"), "database"),
            (DR, dr_check(step_id="dr check;"), "step_id"),
            (DEPLOY, deploy(tenants=[f"t{i}" for i in range(65)]), "tenants"),
            (DEPLOY, deploy(tenants=["acme", "acme corp"]), "tenants.1"),
            (DEPLOY, deploy(environment="production\n"), "environment"),
            (
                VERIFY,
                verification(
                    synthetic={
                        "journey": "checkout",
                        "tenants": ["acme"],
                        "profiles": ["visa"],
                        "journeys_per_tenant": 10_000,
                    }
                ),
                "synthetic.journeys_per_tenant",
            ),
            (
                VERIFY,
                verification(
                    synthetic={"journey": "shop.synthetic:journey", "tenants": ["acme"], "profiles": ["visa"]}
                ),
                "synthetic.journey",
            ),
            (VERIFY, verification(thresholds={"checkout success": {"min": 0.85}}), "thresholds"),
        ],
    )
    def test_a_malformed_identifier_is_refused_naming_its_field(self, event_type, payload, field):
        reason = refusal(headers(event_type), json.dumps(payload).encode())
        assert f"{field}:" in reason or f"{field}." in reason

    def test_a_list_of_names_has_a_length_limit(self):
        reason = refusal(headers(DEPLOY), json.dumps(deploy(tenants=[f"t{i}" for i in range(65)])).encode())
        assert "tenants: List should have at most 64 items" in reason

    def test_free_text_has_a_length_limit(self):
        reason = refusal(headers(CANDIDATE), json.dumps(candidate(changes="x" * (names.MAX_TEXT + 1))).encode())
        assert "changes: String should have at most" in reason

    def test_check_name_names_the_kind_and_the_pattern_and_quotes_a_bounded_part(self):
        with pytest.raises(ValueError, match=r"^database 'shop\?host=elsewhere' must match") as caught:
            names.check_name("database", "shop?host=elsewhere")
        assert names.NAME in str(caught.value)
        with pytest.raises(ValueError) as long:
            names.check_name("tenant", "x;" * 100_000)
        assert len(str(long.value)) < 300

    @pytest.mark.parametrize("value", ["shop\n", "shop ", " shop", "Shop", "", "-shop", ".", "a" * 64, "a/b", "a:b"])
    def test_check_name_refuses_what_the_contract_refuses(self, value):
        with pytest.raises(ValueError):
            names.check_name("service", value)
        with pytest.raises(ValidationError):
            TypeAdapter(Name).validate_python(value)

    @given(st.one_of(st.text(max_size=70), st.from_regex(names.NAME, fullmatch=True)))
    def test_check_name_and_the_contract_agree_on_every_string(self, value):
        try:
            TypeAdapter(Name).validate_python(value)
            contract_accepts = True
        except ValidationError:
            contract_accepts = False
        assert names.matches(value, names.NAME) == contract_accepts

    @pytest.mark.parametrize(
        "pattern,value",
        [
            (names.NAME, "checkout_success_rate"),
            (names.NAME, "v2"),
            (names.NAME, "verifier-business-kpis"),
            (names.NAME, "1.2.3"),
            (names.RELEASE_ID, "shop-v2-1a2b3c4d"),
            (names.STEP_ID, "compensate:production"),
            (names.STEP_ID, "verify-wave-" + "w" * 63),
            (names.NAME_OR_ALL, "*"),
        ],
    )
    def test_names_the_code_uses_have_their_shape(self, pattern, value):
        assert names.check_name("name", value, pattern) == value


class TestHostileRecordsAreContractErrors:
    BASE = json.dumps(candidate()).encode()

    @pytest.mark.parametrize(
        "value,expected",
        [
            (b'{"release_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested more than 32 deep"),
            (BASE[:-1] + b', "attestation": {"a": ' + b'{"b": ' * 40 + b"1" + b"}" * 41 + b"}", "nested more than"),
            (BASE.replace(b'"passed": 1', b'"passed": ' + b"9" * 5000), "tests.passed: an integer of 5000 digits"),
            (BASE.replace(b'"passed": 1', b'"passed": 9223372036854775808'), "tests.passed: an integer beyond 64 bits"),
            (BASE.replace(b'"passed": 1', b'"passed": NaN'), "tests.passed: NaN"),
            (BASE.replace(b'"passed": 1', b'"passed": -Infinity'), "tests.passed: -Infinity"),
            (BASE.replace(b'"passed": 1', b'"passed": 1e999'), "tests.passed: a number too large"),
            (BASE.replace(b'"author": "dev"', b'"author": "d\xffv"'), "not valid JSON text: not UTF-8 (byte"),
            (BASE.replace(b'"author": "dev"', b'"author": "d\\u0000v"'), "field author contains a NUL character"),
            (BASE[:-1] + b', "changes": "a\\u0000"}', "field changes contains a NUL character"),
            (BASE[:-1] + b', "attestation": {"k\\u0000": 1}}', "field attestation has a key with a NUL"),
            (BASE.replace(b'"author": "dev"', b'"author": "d\x00v"'), "NUL byte"),
            (
                BASE.replace(b'"author": "dev"', b'"author": "\\udc00"'),
                "field author contains a NUL character or a lone",
            ),
            (b" " * (names.MAX_VALUE_BYTES + 1), f"records over {names.MAX_VALUE_BYTES} bytes are refused unread"),
            (b"\xef\xbb\xbf" + BASE, "not valid JSON"),
            (b'{"release_id": "shop-v2-1", "author": "' + b"x" * 400_000, "not valid JSON"),
            (b"NaN", "value is NaN"),
            (None, "no value"),
        ],
    )
    def test_a_hostile_value_is_refused_with_a_short_reason(self, value, expected):
        reason = refusal(headers(CANDIDATE), value)
        assert expected in reason
        assert len(reason) <= 1000 and "\n" not in reason

    @pytest.mark.parametrize(
        "extra,expected",
        [
            ({"x-padding": "a" * (names.MAX_HEADER_VALUE + 1)}, "header x-padding is 1025 bytes long"),
            ({"x-log": "ok\nlevel=error forged"}, "header x-log contains a control character"),
            ({"x-log": "ok\x1b[31m"}, "header x-log contains a control character"),
            ({"x-bin": b"\xc3\x28"}, "header x-bin is not valid UTF-8"),
            ({"bad name": "v"}, "is not a token"),
            ({f"h{i}": "v" for i in range(names.MAX_HEADERS)}, f"more than {names.MAX_HEADERS} headers"),
            ({f"h{i}": "v" * 1000 for i in range(10)}, f"headers exceed {names.MAX_HEADER_BYTES} bytes"),
            ({"ce_subject": "shop-v2-1;x"}, "ce_subject 'shop-v2-1;x' does not match"),
            ({"ce_tenant": "acme corp"}, "ce_tenant 'acme corp' does not match"),
            ({"ce_source": "releasegate/cli extra"}, "ce_source"),
            ({"ce_id": "id with space"}, "ce_id"),
            ({"ce_time": "yesterday"}, "ce_time is not RFC 3339"),
        ],
    )
    def test_a_hostile_header_is_refused_naming_it(self, extra, expected):
        hdrs = [(k, v if isinstance(v, bytes) else v.encode()) for k, v in headers(CANDIDATE, **extra).items()]
        assert expected in refusal(hdrs, self.BASE)

    def test_a_repeated_header_is_refused_rather_than_one_of_them_believed(self):
        hdrs = [*[(k, v.encode()) for k, v in headers(CANDIDATE).items()], ("ce_type", b"dev.releasegate.x.v1")]
        assert "header ce_type appears more than once" in refusal(hdrs, self.BASE)

    def test_an_unknown_type_is_quoted_briefly(self):
        reason = refusal(headers("x" * 1000), self.BASE)
        assert "unknown event type" in reason and len(reason) < 200

    def test_a_reason_never_carries_control_characters_from_the_record(self):
        payload = candidate(attestation={"line\nbreak": 1})
        payload["line\nbreak"] = 1
        reason = refusal(headers(CANDIDATE), json.dumps(payload).encode())
        assert "\n" not in reason and "line\\x0abreak" in reason

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(
        value=st.binary(max_size=2000),
        extra=st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=40)), max_size=5),
    )
    def test_any_bytes_are_an_event_or_a_contract_error(self, value, extra):
        try:
            decode([*[(k, v.encode()) for k, v in headers(CANDIDATE).items()], *extra], value)
        except ContractError:
            pass

    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=30,
        )
    )
    def test_any_json_in_any_field_is_an_event_or_a_contract_error(self, anything):
        for field in ("attestation", "tests", "release_id", "changes"):
            try:
                decode(headers(CANDIDATE), json.dumps({**candidate(), field: anything}).encode())
            except ContractError:
                pass


def nested(depth: int, text: str) -> object:
    """A JSON value `depth` levels deep whose strings hold brackets, quotes and backslashes."""
    value: object = text
    for level in range(depth):
        value = [value, text] if level % 2 else {text: value}
    return value


class TestNestingDepth:
    """The depth is counted before parsing, so strings full of brackets or escaped quotes must not fool it."""

    @settings(max_examples=150)
    @given(depth=st.integers(min_value=0, max_value=45), text=st.text(alphabet='[]{}"\\ab,:', max_size=12))
    def test_evidence_nested_within_the_limit_passes_and_deeper_is_refused(self, depth, text):
        status = {
            "release_id": "shop-v2-1a2b3c4d",
            "service": "shop",
            "version": "v2",
            "state": "running",
            "step": "gate-staging",
            "actor": "coordinator",
            "reason": "r",
            "evidence": {"e": nested(depth, text)},
        }
        document = 3 + depth  # the event, its evidence, the "e" entry
        value = json.dumps(status).encode()
        if document <= names.MAX_DEPTH + 1:
            assert decode(headers(ReleaseStatusChanged.event_type), value).data.evidence["e"] == nested(depth, text)
        else:
            assert "nested more than" in refusal(headers(ReleaseStatusChanged.event_type), value)


class TestRealEventsStillPass:
    @pytest.mark.parametrize("path", CANDIDATES, ids=lambda p: p.name)
    def test_every_example_candidate_round_trips_inside_the_gate_request_that_carries_it(self, path):
        raw = json.loads(path.read_text())
        rid = f"{raw['service']}-{raw['version']}-1a2b3c4d"
        submitted = CandidateSubmitted.model_validate({**raw, "release_id": rid})
        approvals = [
            SignedApproval(
                actor=name,
                reason="reviewed: " + "r" * 200,
                signed_at=NOW,
                nonce="a" * 64,
                keyid="b" * 64,
                signature="c" * 128,
            )
            for name in ("alice", "bob", "carol")
        ]
        decision = saga.start(submitted, Catalog(REPO / "catalog").get("shop"), NOW, {})
        command = next(c for _, c in decision.commands if c.event_type.endswith("gate.requested.v1"))
        command = command.model_copy(update={"approvals": approvals})
        key, value, hdrs = encode(Envelope.new(command, "releasegate/coordinator", submitted.release_id))
        assert len(value) * 16 < names.MAX_VALUE_BYTES, "the largest real event fits with a wide margin"
        back = decode(hdrs, value)
        assert back.data == command and back.subject == submitted.release_id

    @pytest.mark.parametrize("catalog", CATALOGS, ids=lambda p: p.name)
    def test_every_step_and_compensation_id_the_coordinator_makes_has_the_step_id_shape(self, catalog):
        entry = Catalog(catalog).get("shop")
        ids = [step.id for step in saga.build_plan(entry)] + [f"compensate:{env}" for env in entry.environments]
        assert [i for i in ids if not names.matches(i, names.STEP_ID)] == []

    def test_a_shop_event_as_the_storefront_sends_it_passes(self):
        event = {
            "version": "v2",
            "environment": "production",
            "tenant": "acme",
            "instance": "production-s1-v2",
            "checkout_id": "0b5c7f0e-3f7e-4a0e-9d7c-1e2f3a4b5c6d",
            "order_id": "9d7c1e2f-3a4b-4c5d-8e6f-0b5c7f0e3f7e",
            "amount_cents": 1999,
            "currency": "USD",
            "reason": None,
            "latency_ms": 12.5,
            "tax_cents": 160,
            "region": "US-NY",
            "items": [{"sku": "sku-1", "qty": 2}],
            "customer": "jane+shop@example.com",
            "payment_ref": "9F2A11C0",
            "placed_at": "2026-12-01T12:00:00Z",
        }
        hdrs = headers("shop.order.placed.v1", ce_source="shop/production/production-s1-v2", ce_tenant="acme")
        assert decode(hdrs, json.dumps(event).encode()).data.order_id == event["order_id"]

    def test_a_dead_letter_of_a_hostile_record_within_its_limits_passes(self):
        letter = DeadLetter(
            consumer="coordinator",
            source_topic="release.control",
            partition=0,
            offset=7,
            key="k" * names.MAX_LABEL,
            reason="r" * names.MAX_REASON,
            error_type="ContractError",
            headers={f"h{i}": "v" * names.MAX_REASON for i in range(names.MAX_DEADLETTER_HEADERS)},
            value="base64:" + "A" * (names.MAX_DEADLETTER_VALUE - 7),
            original_value_bytes=10**6,
            original_value_digest=DIGEST,
            truncated=True,
        )
        key, value, hdrs = encode(Envelope.new(letter, "releasegate/coordinator"))
        assert len(value) < names.MAX_VALUE_BYTES
        assert decode(hdrs, value).data == letter

    def test_a_generated_release_id_fits_even_for_the_longest_names(self):
        from releasegate_cli.client import new_release_id

        rid = new_release_id("s" * names.MAX_NAME, "v" * names.MAX_NAME)
        assert names.matches(rid, names.RELEASE_ID) and re.fullmatch(r".*-[0-9a-f]{8}", rid)
