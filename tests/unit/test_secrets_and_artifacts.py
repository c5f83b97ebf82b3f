"""Secrets never reach a log line; artifacts are addressed by digest and re-verified."""
import pytest

from services.common.artifacts import ArtifactError, ArtifactStore, sha256_file
from services.common.logs import redact
from services.common.settings import ServiceSettings
from services.deployer.domain import traffic_split


class TestRedaction:
    def test_passwords_in_urls_and_secret_keys_are_redacted(self):
        out = redact({"dsn": "postgresql://releasegate:hunter2@db:5432/x", "api_token": "abc", "n": 1})
        assert "hunter2" not in str(out) and out["api_token"] == "***" and out["n"] == 1

    def test_placeholder_database_password_refused_outside_development(self):
        with pytest.raises(ValueError, match="placeholder"):
            ServiceSettings(deployment="production")


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
