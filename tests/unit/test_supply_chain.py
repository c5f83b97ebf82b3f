"""Signed build provenance: only artifacts a trusted builder signed, from an allowed source, verify."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from releasegate_cli.supply_chain import register
from releasegate_platform import supply_chain
from releasegate_platform.supply_chain import AttestationError, TrustRoot, TrustRootError

REPO = Path(__file__).resolve().parents[2]
BUILDER = "https://ci.example/builders/release@v1"
REPOSITORY = "github.com/example/shop"
DIGEST = "sha256:" + hashlib.sha256(b"bundle").hexdigest()
COMMIT = "3f1c9a7be2d04c58a1e6b7f90d2c4e8a6b1f3d57"


@pytest.fixture
def keys(tmp_path) -> dict[str, tuple[Path, Path]]:
    return {name: supply_chain.keygen(tmp_path / "keys", name) for name in ("builder", "second", "stranger")}


def write_trust_root(path: Path, builder_keys: list[Path], threshold: int = 1) -> TrustRoot:
    path.write_text(
        yaml.safe_dump(
            {
                "version": 3,
                "builders": {
                    BUILDER: {"threshold": threshold, "keys": [json.loads(k.read_text()) for k in builder_keys]}
                },
                "services": {
                    "shop": {"sources": [{"repository": REPOSITORY, "refs": ["refs/heads/main", "refs/tags/v*"]}]}
                },
            }
        )
    )
    return TrustRoot.load(path)


@pytest.fixture
def root(tmp_path, keys) -> TrustRoot:
    return write_trust_root(tmp_path / "trust-root.yaml", [keys["builder"][1]])


def statement(**overrides: Any) -> dict[str, Any]:
    args = {
        "artifact_name": "shop.tar.gz",
        "digest": DIGEST,
        "builder_id": BUILDER,
        "build_type": "https://ci.example/build-types/bundle@v1",
        "repository": REPOSITORY,
        "ref": "refs/heads/main",
        "commit": COMMIT,
        "dependencies": [],
        "invocation_id": "run-1",
        "started_on": datetime(2025, 5, 5, 9, 12, tzinfo=UTC),
    }
    return supply_chain.provenance_statement(**{**args, **overrides})


class TestProvenanceStatement:
    def test_describes_the_build_as_slsa_provenance_v1_in_an_in_toto_statement(self):
        dependency = {"uri": "pkg:pypi/aiohttp@3.9.5", "digest": {"sha256": "ab" * 32}}
        s = statement(
            dependencies=[dependency], started_on=datetime(2025, 5, 5, 11, 12, tzinfo=timezone(timedelta(hours=2)))
        )
        assert s["_type"] == "https://in-toto.io/Statement/v1"
        assert s["subject"] == [{"name": "shop.tar.gz", "digest": {"sha256": DIGEST.removeprefix("sha256:")}}]
        assert s["predicateType"] == "https://slsa.dev/provenance/v1"
        build = s["predicate"]["buildDefinition"]
        assert build["externalParameters"] == {"source": {"repository": REPOSITORY, "ref": "refs/heads/main"}}
        assert build["resolvedDependencies"] == [
            {"uri": f"git+{REPOSITORY}@refs/heads/main", "digest": {"gitCommit": COMMIT}},
            dependency,
        ]
        assert s["predicate"]["runDetails"] == {
            "builder": {"id": BUILDER},
            "metadata": {"invocationId": "run-1", "startedOn": "2025-05-05T09:12:00Z"},
        }

    def test_refuses_a_start_time_without_a_time_zone(self):
        with pytest.raises(ValueError):
            statement(started_on=datetime(2025, 5, 5, 9, 12))

    def test_signing_the_same_statement_twice_gives_the_same_envelope(self, keys):
        assert supply_chain.sign(statement(), [keys["builder"][0]]) == supply_chain.sign(
            statement(), [keys["builder"][0]]
        )


class TestAttestation:
    def test_accepts_an_artifact_signed_by_a_trusted_builder_from_an_allowed_source(self, keys, root):
        facts = supply_chain.verify(supply_chain.sign(statement(), [keys["builder"][0]]), DIGEST, "shop", root)
        assert facts.ok and facts.problems == ()
        assert (facts.present, facts.signature_verified, facts.valid_signatures, facts.threshold) == (True, True, 1, 1)
        assert (facts.subject_digest, facts.subject_matches) == (DIGEST, True)
        assert (facts.builder_id, facts.builder_trusted) == (BUILDER, True)
        assert (facts.source_repository, facts.source_ref, facts.source_commit, facts.source_allowed) == (
            REPOSITORY,
            "refs/heads/main",
            COMMIT,
            True,
        )

    def test_accepts_a_release_tag_that_matches_an_allowed_ref_pattern(self, keys, root):
        envelope = supply_chain.sign(statement(ref="refs/tags/v1.4.0"), [keys["builder"][0]])
        assert supply_chain.inspect(envelope, DIGEST, "shop", root).ok

    def test_refuses_an_unsigned_artifact(self, root):
        facts = supply_chain.inspect(None, DIGEST, "shop", root)
        assert not facts.present and not facts.signature_verified
        assert facts.problems == ("the artifact is unsigned: the candidate carries no attestation",)
        with pytest.raises(AttestationError, match="unsigned"):
            supply_chain.verify(None, DIGEST, "shop", root)

    def test_refuses_an_envelope_that_carries_no_signature(self, keys, root):
        envelope = {**supply_chain.sign(statement(), [keys["builder"][0]]), "signatures": []}
        assert "unsigned" in supply_chain.inspect(envelope, DIGEST, "shop", root).problems[0]

    def test_refuses_a_signature_by_a_key_the_trust_root_does_not_list(self, keys, root):
        facts = supply_chain.inspect(supply_chain.sign(statement(), [keys["stranger"][0]]), DIGEST, "shop", root)
        assert not facts.signature_verified and facts.builder_trusted
        assert facts.problems == (
            f"signature of builder {BUILDER} does not verify with the trust root's keys (0 of 1 valid)",
        )

    def test_rejects_a_tampered_payload(self, keys, root):
        envelope = supply_chain.sign(statement(digest="sha256:" + "0" * 64), [keys["builder"][0]])
        forged = json.loads(base64.b64decode(envelope["payload"]))
        forged["subject"][0]["digest"]["sha256"] = DIGEST.removeprefix("sha256:")
        envelope["payload"] = base64.b64encode(json.dumps(forged).encode()).decode()
        facts = supply_chain.inspect(envelope, DIGEST, "shop", root)
        assert not facts.signature_verified
        assert facts.subject_digest is None and not facts.subject_matches, "unverified claims are not facts"

    def test_needs_as_many_valid_signatures_as_the_builders_threshold(self, tmp_path, keys):
        root = write_trust_root(tmp_path / "two.yaml", [keys["builder"][1], keys["second"][1]], threshold=2)
        one = supply_chain.inspect(supply_chain.sign(statement(), [keys["builder"][0]]), DIGEST, "shop", root)
        assert (one.signature_verified, one.valid_signatures, one.threshold) == (False, 1, 2)
        assert "(1 of 2 valid)" in one.problems[0]
        both = supply_chain.sign(statement(), [keys["builder"][0], keys["second"][0]])
        assert supply_chain.inspect(both, DIGEST, "shop", root).ok

    def test_refuses_an_attestation_about_another_artifact(self, keys, root):
        other = "sha256:" + "1" * 64
        facts = supply_chain.inspect(
            supply_chain.sign(statement(digest=other), [keys["builder"][0]]), DIGEST, "shop", root
        )
        assert facts.signature_verified and not facts.subject_matches
        assert facts.problems == (f"attestation subject {other} is not the artifact {DIGEST}",)

    def test_refuses_a_builder_that_is_not_in_the_trust_root(self, keys, root):
        rogue = "https://rogue.example/builder"
        facts = supply_chain.inspect(
            supply_chain.sign(statement(builder_id=rogue), [keys["builder"][0]]), DIGEST, "shop", root
        )
        assert not facts.builder_trusted and not facts.signature_verified
        assert facts.problems == (f"builder {rogue} is not in the trust root",)

    def test_refuses_a_source_repository_that_is_not_allowed(self, keys, root):
        envelope = supply_chain.sign(statement(repository="github.com/evil/shop"), [keys["builder"][0]])
        facts = supply_chain.inspect(envelope, DIGEST, "shop", root)
        assert facts.signature_verified and not facts.source_allowed
        assert facts.problems == ("source github.com/evil/shop@refs/heads/main is not allowed for shop",)

    def test_refuses_a_ref_that_is_not_allowed(self, keys, root):
        facts = supply_chain.inspect(
            supply_chain.sign(statement(ref="refs/heads/dev"), [keys["builder"][0]]), DIGEST, "shop", root
        )
        assert facts.problems == (f"source {REPOSITORY}@refs/heads/dev is not allowed for shop",)

    def test_refuses_a_service_the_trust_root_allows_no_source_for(self, keys, root):
        facts = supply_chain.inspect(supply_chain.sign(statement(), [keys["builder"][0]]), DIGEST, "billing", root)
        assert not facts.source_allowed and facts.problems[0].startswith("source ")

    def test_refuses_a_tag_instead_of_a_digest(self, keys, root):
        facts = supply_chain.inspect(supply_chain.sign(statement(), [keys["builder"][0]]), "shop:latest", "shop", root)
        assert not facts.subject_matches
        assert facts.problems == ("artifact reference 'shop:latest' is a tag, not a sha256 digest",)

    @pytest.mark.parametrize(
        "envelope",
        [
            {},
            {"payload": "%%%", "payloadType": supply_chain.PAYLOAD_TYPE, "signatures": []},
            {"payload": base64.b64encode(b"{}").decode(), "payloadType": supply_chain.PAYLOAD_TYPE, "signatures": 7},
            {
                "payload": base64.b64encode(b"{}").decode(),
                "payloadType": supply_chain.PAYLOAD_TYPE,
                "signatures": [{"keyid": "k", "sig": "%%%"}],
            },
            {
                "payload": base64.b64encode(b"not json").decode(),
                "payloadType": supply_chain.PAYLOAD_TYPE,
                "signatures": [{"keyid": "k", "sig": "AAAA"}],
            },
            {
                "payload": base64.b64encode(b"[1, 2]").decode(),
                "payloadType": supply_chain.PAYLOAD_TYPE,
                "signatures": [{"keyid": "k", "sig": "AAAA"}],
            },
            ["not", "a", "mapping"],
        ],
        ids=[
            "empty",
            "payload-not-base64",
            "signatures-not-a-list",
            "sig-not-base64",
            "payload-not-json",
            "payload-not-a-statement",
            "not-a-mapping",
        ],
    )
    def test_reports_a_malformed_envelope_as_a_problem_instead_of_raising(self, root, envelope):
        facts = supply_chain.inspect(envelope, DIGEST, "shop", root)
        assert facts.present and not facts.signature_verified and len(facts.problems) == 1
        with pytest.raises(AttestationError):
            supply_chain.verify(envelope, DIGEST, "shop", root)

    def test_refuses_a_payload_type_other_than_in_toto(self, keys, root):
        envelope = {**supply_chain.sign(statement(), [keys["builder"][0]]), "payloadType": "text/plain"}
        assert "payload type" in supply_chain.inspect(envelope, DIGEST, "shop", root).problems[0]

    def test_leaves_the_envelope_it_inspects_unchanged(self, keys, root):
        envelope = supply_chain.sign(statement(), [keys["builder"][0]])
        before = copy.deepcopy(envelope)
        supply_chain.inspect(envelope, DIGEST, "shop", root)
        assert envelope == before
        assert supply_chain.inspect(envelope, DIGEST, "shop", root).ok

    def test_facts_are_a_json_policy_input(self, keys, root):
        facts = supply_chain.inspect(supply_chain.sign(statement(), [keys["stranger"][0]]), DIGEST, "shop", root)
        data = json.loads(json.dumps(facts.as_input()))
        assert data["signature_verified"] is False and data["problems"] == list(facts.problems)


class TestKeysAndTrustRoot:
    def test_keygen_writes_an_owner_only_private_key_and_a_public_key_with_its_keyid(self, keys):
        private, public = keys["builder"]
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        data = json.loads(public.read_text())
        assert data["keytype"] == data["scheme"] == "ed25519"
        assert data["keyid"] == supply_chain.load_signer(private).public_key.keyid
        assert "PRIVATE" not in public.read_text()

    def test_keygen_refuses_to_overwrite_a_private_key(self, keys):
        with pytest.raises(FileExistsError):
            supply_chain.keygen(keys["builder"][0].parent, "builder")

    def test_a_public_key_must_carry_its_own_keyid(self, keys):
        data = json.loads(keys["builder"][1].read_text())
        assert supply_chain.load_public_key(data).keyid == data["keyid"]
        with pytest.raises(ValueError, match="does not belong"):
            supply_chain.load_public_key({**data, "keyid": "f" * 64})

    def test_trust_root_digest_is_the_sha256_of_its_file(self, tmp_path, root):
        raw = (tmp_path / "trust-root.yaml").read_bytes()
        assert root.digest == "sha256:" + hashlib.sha256(raw).hexdigest() and root.version == 3

    def test_trust_root_refuses_a_threshold_no_set_of_its_keys_can_meet(self, tmp_path, keys):
        with pytest.raises(TrustRootError, match="threshold"):
            write_trust_root(tmp_path / "bad.yaml", [keys["builder"][1]], threshold=2)

    def test_trust_root_refuses_the_same_key_listed_twice(self, tmp_path, keys):
        with pytest.raises(TrustRootError, match="twice"):
            write_trust_root(tmp_path / "bad.yaml", [keys["builder"][1], keys["builder"][1]], threshold=2)

    def test_example_candidates_verify_against_the_repository_trust_root(self):
        root = TrustRoot.load(REPO / "policies/trust-root.yaml")
        for path in sorted((REPO / "examples/candidates").glob("shop-v*.json")):
            candidate = json.loads(path.read_text())
            facts = supply_chain.verify(candidate["attestation"], candidate["artifact"]["digest"], "shop", root)
            assert facts.source_commit == candidate["source"]["commit"], path.name


class TestCommandLine:
    @pytest.fixture
    def app(self) -> typer.Typer:
        app = typer.Typer()
        register(app)
        return app

    def test_keygen_attest_and_verify_accept_the_signed_file_and_refuse_another(self, app, tmp_path):
        runner = CliRunner()
        made = runner.invoke(app, ["keygen", "ci", "--dir", str(tmp_path)])
        assert made.exit_code == 0, made.output
        assert "PRIVATE KEY" not in made.output and "ci.key" in made.output
        root_path = tmp_path / "trust-root.yaml"
        write_trust_root(root_path, [tmp_path / "ci.pub.json"])
        artifact, other = tmp_path / "shop.tar.gz", tmp_path / "other.tar.gz"
        artifact.write_bytes(b"the bundle")
        other.write_bytes(b"another bundle")

        attested = runner.invoke(
            app,
            [
                "attest",
                str(artifact),
                "--key",
                str(tmp_path / "ci.key"),
                "--builder-id",
                BUILDER,
                "--repository",
                REPOSITORY,
                "--ref",
                "refs/heads/main",
                "--commit",
                COMMIT,
                "--out",
                str(tmp_path / "shop.att.json"),
            ],
        )
        assert attested.exit_code == 0, attested.output

        verify = ["verify", "--service", "shop", "--trust-root", str(root_path)]
        ok = runner.invoke(app, [*verify, str(artifact), str(tmp_path / "shop.att.json")])
        assert ok.exit_code == 0, ok.output
        assert "verified" in ok.output
        refused = runner.invoke(app, [*verify, str(other), str(tmp_path / "shop.att.json")])
        assert refused.exit_code == 1
        assert "is not the artifact" in refused.output

    def test_attest_prints_the_envelope_when_no_output_file_is_given(self, app, tmp_path, keys):
        artifact = tmp_path / "shop.tar.gz"
        artifact.write_bytes(b"the bundle")
        result = CliRunner().invoke(
            app,
            [
                "attest",
                str(artifact),
                "--key",
                str(keys["builder"][0]),
                "--builder-id",
                BUILDER,
                "--repository",
                REPOSITORY,
                "--ref",
                "refs/heads/main",
                "--commit",
                COMMIT,
            ],
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["payloadType"] == supply_chain.PAYLOAD_TYPE
