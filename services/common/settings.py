"""Settings every service reads from the environment (prefix RG_), built in bootstrap, never at import."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER_PASSWORDS = {"releasegate", "postgres", "password", "changeme", ""}


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RG_", extra="ignore")

    deployment: str = "development"
    env: str = Field(default="production", description="`local` only on the local stack: the one place demo keys "
                     "(examples/keys/) are trusted.")
    kafka_bootstrap: str = "127.0.0.1:19092"
    principal: str | None = Field(default=None, description="Kafka SASL/SCRAM user (one per service).")
    kafka_password: SecretStr | None = None
    kafka_password_file: Path | None = Field(default=None, description="File holding the SCRAM password; default "
                                             "<secrets_dir>/kafka/<principal>.password.")
    kafka_ca_file: Path | None = Field(default=None, description="CA bundle: SASL over TLS (SASL_SSL) when set.")
    secrets_dir: Path = REPO_ROOT / ".run" / "secrets"
    bus_policy_file: Path = Field(default=REPO_ROOT / "deploy" / "kafka" / "acls.yaml", description="Principals "
                                  "and ACLs of the bus; the coordinator learns who writes which result topic.")
    signing_key_file: Path | None = Field(default=None, description="This service's ed25519 private key (the "
                                          "coordinator signs step grants with it).")
    coordinator_public_key_file: Path | None = Field(default=None, description="The coordinator's ed25519 public "
                                                     "key (deployer and rollback verify step grants with it).")
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

    def kafka_credentials(self) -> tuple[str, str]:
        """(user, password) of this process's Kafka principal; the password from RG_KAFKA_PASSWORD, else from
        its file. Every client authenticates: there is no anonymous listener."""
        if not self.principal:
            raise ValueError("RG_PRINCIPAL is not set: every Kafka client authenticates as a principal")
        if self.kafka_password is not None:
            return self.principal, self.kafka_password.get_secret_value()
        path = self.kafka_password_file or self.secrets_dir / "kafka" / f"{self.principal}.password"
        try:
            return self.principal, path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"no Kafka password for {self.principal}: {exc}") from None

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
