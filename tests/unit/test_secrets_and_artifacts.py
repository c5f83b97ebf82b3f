"""Secrets never reach a log line; artifacts are addressed by digest and re-verified."""

import pytest

from releasegate_platform.artifacts import ArtifactError, ArtifactStore, sha256_file
from releasegate_runtime.logs import redact
from releasegate_runtime.settings import ServiceSettings
from services.deployer.domain import traffic_split


class TestRedaction:
    def test_passwords_in_urls_and_secret_keys_are_redacted(self):
        out = redact({"dsn": "postgresql://releasegate:hunter2@db:5432/x", "api_token": "abc", "n": 1})
        assert "hunter2" not in str(out) and out["api_token"] == "***" and out["n"] == 1

    def test_placeholder_database_password_refused_outside_development(self, tmp_path):
        with pytest.raises(ValueError, match="placeholder"):
            ServiceSettings(deployment="production", secrets_dir=tmp_path)  # no generated secrets

    def test_each_service_connects_as_its_own_role_with_its_own_password(self, tmp_path):
        (tmp_path / "postgres").mkdir()
        for role in ("releasegate", "rg_coordinator", "rg_verifier"):
            (tmp_path / "postgres" / f"{role}.password").write_text(f"pw-of-{role}\n")
        base = ServiceSettings(secrets_dir=tmp_path)
        assert base.database_url.startswith("postgresql://releasegate:pw-of-releasegate@")
        coordinator = base.for_principal("coordinator")
        assert coordinator.principal == "coordinator"
        assert coordinator.database_url.startswith("postgresql://rg_coordinator:pw-of-rg_coordinator@")
        assert base.for_principal("verifier-tax").database_url.startswith("postgresql://rg_verifier:")
        explicit = ServiceSettings(secrets_dir=tmp_path, database_url="postgresql://x:y@h/db")
        assert explicit.for_principal("coordinator").database_url == "postgresql://x:y@h/db"

    def test_kafka_password_comes_from_the_principals_file(self, tmp_path):
        (tmp_path / "kafka").mkdir()
        (tmp_path / "kafka" / "ci.password").write_text("s3cret\n")
        assert ServiceSettings(secrets_dir=tmp_path, principal="ci").kafka_credentials() == ("ci", "s3cret")
        with pytest.raises(ValueError, match="RG_PRINCIPAL"):
            ServiceSettings(secrets_dir=tmp_path).kafka_credentials()


class TestArtifactStore:
    def test_tags_are_refused(self, tmp_path):
        with pytest.raises(ArtifactError, match="tags are refused"):
            ArtifactStore(tmp_path).path("shop:latest")

    def test_tampered_content_is_refused(self, tmp_path):
        store = ArtifactStore(tmp_path)
        blob = tmp_path / "sha256"
        blob.mkdir()
        f = blob / ("0" * 64 + ".tar.gz")
        f.write_bytes(b"not what was signed")
        with pytest.raises(ArtifactError, match="tampered"):
            store.verify("sha256:" + "0" * 64)

    def test_intact_content_verifies(self, tmp_path):
        (tmp_path / "sha256").mkdir()
        f = tmp_path / "sha256" / "tmp.tar.gz"
        f.write_bytes(b"bundle")
        digest = sha256_file(f)
        f.rename(tmp_path / "sha256" / f"{digest[7:]}.tar.gz")
        assert ArtifactStore(tmp_path).verify(digest).is_file()


class TestTrafficSplit:
    def test_candidate_gets_its_percent_and_stable_the_rest(self):
        assert traffic_split("v2", "v1", 10) == {"v2": 10, "v1": 90}

    def test_without_a_distinct_stable_the_candidate_takes_all(self):
        assert traffic_split("v2", None, 10) == {"v2": 100}
