"""Change records: what a record of a promoted and of a rolled-back release says, that its signature binds every byte
to the records key, that its page shows hostile strings as text, that a release is recorded once whatever is
redelivered, and what the API and `releasegate record verify` answer."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from securesystemslib.signer import CryptoSigner
from typer.testing import CliRunner

from releasegate_cli.main import app as cli
from releasegate_platform import change_record, change_record_html
from releasegate_platform.oidc import Claims, TokenError
from releasegate_runtime.keys import keygen, load_public_key, load_signer
from services.api import http
from services.api.record_store import StoredRecord
from services.api.records import Records

NOW = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)
XSS = '<script>window.__pwned=1</script><img src=x onerror="alert(1)"> & "quotes"'
RID = "shop-v3-1a2b3c4d"


def kpi(name: str, candidate: float, baseline: float, verdict: str) -> dict[str, Any]:
    return {
        "name": name,
        "candidate": candidate,
        "baseline": baseline,
        "candidate_samples": 240,
        "baseline_samples": 2100,
        "verdict": verdict,
        "rule": "candidate >= baseline - 0.05",
    }


def evidence(outcome: str = "rolled_back", changes: str = "Normalise card numbers (payments.py).") -> tuple[dict, dict]:
    """A release read model as the API serves it (services/api/read_models.PgReadModels.release) and the extras."""
    rolled_back = outcome == "rolled_back"
    timeline = [
        {
            "id": 1,
            "at": "2026-12-05T03:50:00+00:00",
            "actor": "ci",
            "state": "running",
            "step": None,
            "reason": "candidate submitted",
            "evidence": {},
        },
        {
            "id": 7,
            "at": "2026-12-05T03:55:00+00:00",
            "actor": "verifier",
            "state": "rolling_back" if rolled_back else "running",
            "step": "verify-canary-10",
            "reason": "verification verify-canary-10 failed: checkout_success dropped",
            "evidence": {},
        },
        {
            "id": 8,
            "at": "2026-12-05T03:55:05+00:00",
            "actor": "rollback",
            "state": "rolling_back",
            "step": "compensate:production",
            "reason": "compensation compensate:production done: tenants acme routed back",
            "evidence": {},
        },
        {
            "id": 9,
            "at": "2026-12-05T03:55:09+00:00",
            "actor": "coordinator",
            "state": outcome,
            "step": None,
            "reason": f"release {outcome}",
            "evidence": {},
        },
    ]
    gate = {
        "step_id": "gate-production",
        "environment": "production",
        "decision": "pass",
        "risk": "high",
        "policy_version": "2026.12.1",
        "input_digest": "sha256:" + "ab" * 32,
        "decided_at": "2026-12-05T03:52:00+00:00",
        "rules": [{"name": "provenance", "passed": True, "reason": "signed by the shop builder", "evidence": {}}],
        "warnings": [],
        "refused": [],
        "change": {
            "paths": ["payments.py"],
            "domains": ["payments"],
            "baseline_version": "v2",
            "files_changed": 1,
            "lines_changed": 4,
            "unclassified": [],
        },
    }
    detail = {
        "release": {
            "release_id": RID,
            "service": "shop",
            "version": "v3",
            "digest": "sha256:" + "f6" * 32,
            "strategy": "canary",
            "state": outcome,
            "terminal": True,
            "created_at": "2026-12-05T03:50:00+00:00",
            "updated_at": "2026-12-05T03:55:09+00:00",
        },
        "timeline": timeline,
        "traffic": [
            {
                "at": "2026-12-05T03:54:00+00:00",
                "step": "canary-10",
                "environment": "production",
                "weights": {"v2": 90, "v3": 10},
                "tenants_on_candidate": ["initech"],
            }
        ],
        "verdicts": [
            {
                "at": "2026-12-05T03:55:00+00:00",
                "step_id": "verify-canary-10",
                "environment": "production",
                "outcome": "failed" if rolled_back else "passed",
                "reason": "checkout",
                "verifier": "business-kpis",
                "kpis": [
                    kpi("checkout_success", 0.41 if rolled_back else 0.97, 0.97, "fail" if rolled_back else "pass")
                ],
            }
        ],
        "gates": [gate],
        "explain": ["Release shop-v3 is rolled back."],
        "dr": [
            {
                "step_id": "dr-check",
                "ready": True,
                "at": "2026-12-05T03:51:00+00:00",
                "checks": [{"name": "backup_fresh", "passed": True, "reason": "backup 3 min old"}],
            }
        ],
        "approvals": [
            {
                "actor": "alice",
                "kind": "approval",
                "reason": XSS,
                "signed_at": "2026-12-05T03:50:30+00:00",
                "attested_by": None,
            }
        ],
        "failure_reason": "checkout_success dropped" if rolled_back else None,
    }
    extras = {
        "body": {
            "candidate": {
                "service": "shop",
                "version": "v3",
                "author": "dev",
                "changes": changes,
                "artifact": {"digest": "sha256:" + "f6" * 32},
                "source": {
                    "repository": "github.com/releasegate/sample-shop",
                    "ref": "refs/heads/main",
                    "commit": "c47a19e05d3b8f26a0e4c1d7b9f35e2a8c6d0b93",
                },
                "attestation": {"payload": "e30=", "payloadType": "x", "signatures": []},
            },
            "compensations": [
                {
                    "id": "compensate:production",
                    "environment": "production",
                    "name": "restore-traffic-production",
                    "kind": "restore_traffic",
                    "undoes": ["canary-10"],
                    "status": "done",
                }
            ]
            if rolled_back
            else [],
        },
        "gate_inputs": {
            "gate-production": {
                "attestation": {
                    "present": True,
                    "signature_verified": True,
                    "valid_signatures": 1,
                    "threshold": 1,
                    "builder_id": "https://ci.shop.example/builders/release@v1",
                    "problems": [],
                },
                "approvals": [
                    {
                        "actor": "alice",
                        "kind": "approval",
                        "signature_valid": True,
                        "groups": ["shop-approvers"],
                        "refused_reason": None,
                    }
                ],
                "trust": {"trust_root": "sha256:" + "cd" * 32},
            }
        },
        "backups": [],
        "drills": [],
        "stable_source": None,
        "incidents": [{"release_id": RID, "summary": "checkout dropped", "followups": []}] if rolled_back else [],
    }
    return detail, extras


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[CryptoSigner, Any, CryptoSigner, Path]:
    d = tmp_path_factory.mktemp("keys")
    private, public = keygen(d, "records")
    other, _ = keygen(d, "other")
    return load_signer(private), load_public_key(public), load_signer(other), public


class TestTheRecord:
    def test_a_rolled_back_release_carries_its_verdict_compensations_and_incident(self):
        record = change_record.build(*evidence("rolled_back"), NOW)
        assert record["release"]["outcome"] == "rolled_back"
        assert record["verdicts"][0]["kpis"][0]["verdict"] == "fail"
        assert record["compensations"][0]["name"] == "restore-traffic-production"
        assert [e["actor"] for e in record["compensations"][0]["events"]] == ["rollback"]
        assert record["incident"]["present"] and record["incident"]["incidents"][0]["summary"] == "checkout dropped"
        assert record["provenance"]["verified"] and record["provenance"]["step_id"] == "gate-production"
        assert record["approvals"][0]["groups"] == ["shop-approvers"]
        assert record["gates"][0]["policy_version"] == "2026.12.1"

    def test_a_promoted_release_says_there_was_no_incident(self):
        record = change_record.build(*evidence("promoted"), NOW)
        assert record["incident"] == {"present": False, "note": "no incident"}
        assert record["compensations"] == []

    def test_release_notes_come_from_the_changes_and_the_gate_diff_and_invent_no_commits(self):
        notes = change_record.build(*evidence(), NOW)["release_notes"]
        assert notes["changed_paths"] == ["payments.py"] and notes["domains"] == ["payments"]
        assert notes["baseline_version"] == "v2" and notes["commits"] is None
        assert "no access to the repository's history" in notes["commits_note"]
        assert "Normalise card numbers" in notes["text"] and "payments.py" in notes["text"]

    def test_release_notes_name_the_commit_range_when_the_stable_version_was_released_here(self):
        detail, extras = evidence()
        extras["stable_source"] = {"repository": "github.com/releasegate/sample-shop", "commit": "0" * 40}
        notes = change_record.build(detail, extras, NOW)["release_notes"]
        assert notes["commit_range"]["from"] == "0" * 40 and notes["commits"] is None


class TestSignature:
    def test_a_sealed_record_opens_with_the_public_key_alone(self, keys):
        signer, public, _, _ = keys
        record = change_record.build(*evidence(), NOW)
        assert change_record.open_envelope(change_record.seal(record, signer), public) == record

    def test_a_changed_payload_is_refused(self, keys):
        signer, public, _, _ = keys
        envelope = change_record.seal(change_record.build(*evidence(), NOW), signer)
        record = json.loads(base64.b64decode(envelope["payload"]))
        record["release"]["outcome"] = "promoted"
        forged = {**envelope, "payload": base64.b64encode(json.dumps(record).encode()).decode()}
        with pytest.raises(change_record.RecordError, match="altered"):
            change_record.open_envelope(forged, public)

    def test_a_record_signed_by_another_key_is_refused_even_under_the_records_keyid(self, keys):
        _, public, other, _ = keys
        envelope = change_record.seal(change_record.build(*evidence(), NOW), other)
        with pytest.raises(change_record.RecordError, match="not signed by the records key"):
            change_record.open_envelope(envelope, public)
        envelope["signatures"][0]["keyid"] = public.keyid
        with pytest.raises(change_record.RecordError, match="does not verify"):
            change_record.open_envelope(envelope, public)

    def test_another_payload_type_is_refused(self, keys):
        signer, public, _, _ = keys
        envelope = change_record.seal(change_record.build(*evidence(), NOW), signer)
        with pytest.raises(change_record.RecordError, match="payload type"):
            change_record.open_envelope({**envelope, "payloadType": "application/vnd.in-toto+json"}, public)


class TestThePage:
    def page(self, changes: str = XSS) -> str:
        record = change_record.build(*evidence(changes=changes), NOW)
        return change_record_html.render(record, {"verified": True, "keyid": "k", "payload_sha256": "sha256:x"})

    def test_hostile_strings_are_shown_as_text(self):
        page = self.page()
        assert "<script>window.__pwned" not in page and '<img src=x onerror="alert(1)">' not in page
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
        assert "<script" not in page.lower()  # the page has no script of its own either

    def test_the_page_allows_only_its_own_style(self):
        page = self.page()
        assert f'content="{change_record_html.META_CSP.replace(chr(39), "&#x27;")}"' in page
        assert "default-src 'none'" in change_record_html.CSP and "script-src" not in change_record_html.CSP

    def test_the_page_shows_the_kpi_table_and_the_compensations(self):
        page = self.page("fix")
        assert 'class="kpis"' in page and "checkout_success" in page and "0.41" in page
        assert "restore-traffic-production" in page and "tenants acme routed back" in page


class MemoryStore:
    """The records table and the read models in memory; a record is stored once per release, as the table's key
    makes it."""

    def __init__(self, outcome: str | None = "rolled_back") -> None:
        self.outcome = outcome
        self.rows: dict[str, StoredRecord] = {}

    async def evidence(self, release_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        if release_id != RID or self.outcome is None:
            return None
        detail, extras = evidence(self.outcome if self.outcome != "running" else "rolled_back")
        detail["release"]["terminal"] = self.outcome != "running"
        return detail, extras

    async def unrecorded(self, limit: int) -> list[str]:
        return [] if RID in self.rows or self.outcome in (None, "running") else [RID]

    async def insert(self, record: StoredRecord) -> bool:
        if record.release_id in self.rows:
            return False
        self.rows[record.release_id] = record
        return True

    async def envelope(self, release_id: str) -> dict[str, Any] | None:
        row = self.rows.get(release_id)
        return None if row is None else copy.deepcopy(row.envelope)

    async def listing(self, service: str, limit: int) -> list[dict[str, Any]]:
        return [
            {
                "release_id": r.release_id,
                "version": r.version,
                "outcome": r.outcome,
                "payload_sha256": r.payload_sha256,
                "recorded_at": NOW.isoformat(),
            }
            for r in self.rows.values()
            if r.service == service
        ]


class TestWritingOnce:
    async def test_an_ended_release_is_recorded_once_whatever_is_redelivered(self, keys):
        signer, public, _, _ = keys
        store = MemoryStore()
        clock = iter([NOW, datetime(2026, 12, 5, 5, 0, tzinfo=UTC)])
        records = Records(store, signer, clock=lambda: next(clock))
        assert await records.sweep() == 1
        first = copy.deepcopy(store.rows[RID].envelope)
        assert await records.write(RID) is False  # the end seen again, an hour later
        assert store.rows[RID].envelope == first
        assert change_record.open_envelope(first, public)["generated_at"] == "2026-12-05T04:00:00Z"

    async def test_a_release_still_running_is_not_recorded(self, keys):
        store = MemoryStore("running")
        assert await Records(store, keys[0]).write(RID) is False and store.rows == {}


class Tokens:
    async def verify(self, token: str) -> Claims:
        if token == "vic":
            raw = {"iss": "http://issuer", "sub": "s-vic", "preferred_username": "vic"}
            return Claims("s-vic", "vic", frozenset({"releasegate-viewers"}), raw)
        raise TokenError("signature does not verify")


class ReadModels:
    async def saga_rules(self, release_id: str) -> tuple[str, str, dict[str, Any]] | None:
        return ("shop", "running", {"candidate": {"author": "dev"}}) if release_id == "shop-v4-00000000" else None


def api(store: MemoryStore, signer: CryptoSigner) -> TestClient:
    ports = http.Ports.unwired()
    ports.tokens = Tokens()
    ports.read_models = ReadModels()  # type: ignore[assignment]
    ports.records = Records(store, signer)
    return TestClient(http.build(ports))


VIC = {"Authorization": "Bearer vic"}


class TestTheApi:
    async def test_serves_the_envelope_the_page_and_the_listing(self, keys):
        signer, public, _, _ = keys
        store = MemoryStore()
        await Records(store, signer).sweep()
        c = api(store, signer)
        envelope = c.get(f"/v1/releases/{RID}/record", headers=VIC).json()
        assert change_record.open_envelope(envelope, public)["release"]["release_id"] == RID
        page = c.get(f"/v1/releases/{RID}/record.html", headers=VIC)
        assert page.headers["content-security-policy"] == change_record_html.CSP
        assert "Signature verified" in page.text and "restore-traffic-production" in page.text
        listed = c.get("/v1/services/shop/records", headers=VIC).json()
        assert [r["release_id"] for r in listed] == [RID] and listed[0]["url"].endswith(f"/{RID}/record")

    def test_needs_a_login(self, keys):
        assert api(MemoryStore(), keys[0]).get(f"/v1/releases/{RID}/record").status_code == 401

    def test_a_release_not_ended_has_no_record_yet(self, keys):
        r = api(MemoryStore(), keys[0]).get("/v1/releases/shop-v4-00000000/record", headers=VIC)
        assert r.status_code == 404 and "has not ended" in r.json()["detail"]

    async def test_a_stored_record_altered_in_the_database_is_not_served(self, keys):
        signer = keys[0]
        store = MemoryStore()
        await Records(store, signer).sweep()
        row = store.rows[RID]
        row.envelope["payload"] = base64.b64encode(b'{"record_version": 1}').decode()
        r = api(store, signer).get(f"/v1/releases/{RID}/record.html", headers=VIC)
        assert r.status_code == 500 and "does not verify" in r.json()["detail"]


class TestVerifyCommand:
    def run(self, *args: str) -> Any:
        return CliRunner().invoke(cli, ["record", "verify", *args])

    def test_exit_0_for_a_record_that_verifies_and_1_for_a_tampered_one(self, keys, tmp_path):
        signer, _, other, public_path = keys
        envelope = change_record.seal(change_record.build(*evidence(), NOW), signer)
        good = tmp_path / "good.json"
        good.write_text(json.dumps(envelope))
        ok = self.run(str(good), "--public-key", str(public_path))
        assert ok.exit_code == 0 and "verified" in ok.output, ok.output

        payload = base64.b64decode(envelope["payload"]).replace(b'"rolled_back"', b'"promoted"')
        tampered = tmp_path / "tampered.json"
        tampered.write_text(json.dumps({**envelope, "payload": base64.b64encode(payload).decode()}))
        refused = self.run(str(tampered), "--public-key", str(public_path))
        assert refused.exit_code == 1 and "refused" in refused.output, refused.output

        foreign = tmp_path / "foreign.json"
        foreign.write_text(json.dumps(change_record.seal(change_record.build(*evidence(), NOW), other)))
        assert self.run(str(foreign), "--public-key", str(public_path)).exit_code == 1
