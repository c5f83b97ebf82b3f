"""Settings every service reads from the environment (prefix RG_), built in bootstrap, never at import."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER_PASSWORDS = {"releasegate", "postgres", "password", "changeme", ""}


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RG_", extra="ignore")

    deployment: str = "development"
    kafka_bootstrap: str = "127.0.0.1:19092"
    database_url: str = "postgresql://releasegate:releasegate@127.0.0.1:15432/releasegate"
    catalog_dir: Path = REPO_ROOT / "catalog"
    artifact_store: Path = REPO_ROOT / ".cache" / "store"
    run_dir: Path = REPO_ROOT / ".run"
    log_level: str = "INFO"
    otlp_endpoint: str | None = None
    haproxy_admin: str = "127.0.0.1:18999"
    health_port: int | None = None
    policy_dir: Path = REPO_ROOT / "policies"
    calendar_file: Path = REPO_ROOT / "policies" / "calendar.yaml"
    environments_dir: Path = REPO_ROOT / "deploy" / "environments"

    @property
    def trust_root_file(self) -> Path:
        return self.policy_dir / "trust-root.yaml"

    @property
    def identities_file(self) -> Path:
        return self.policy_dir / "identities.yaml"

    @model_validator(mode="after")
    def _no_placeholder_secrets_outside_development(self) -> ServiceSettings:
        if self.deployment != "development":
            password = urlsplit(self.database_url).password or ""
            if password in PLACEHOLDER_PASSWORDS:
                raise ValueError("RG_DATABASE_URL uses a placeholder password outside development")
        return self
