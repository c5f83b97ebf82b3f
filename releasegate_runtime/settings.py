"""Settings every service reads from the environment (prefix RG_), built in bootstrap, never at import."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self
from urllib.parse import quote, urlsplit

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER_PASSWORDS = {"releasegate", "postgres", "password", "changeme", ""}
OWNER_ROLE = "releasegate"  # owns the control database's schema: init_stack, bootstrap scripts, tests
# Each principal's PostgreSQL role (deploy/postgres/grants.sql says what each may do).
DB_ROLES = {
    "coordinator": "rg_coordinator",
    "gatekeeper": "rg_gatekeeper",
    "dr-checker": "rg_dr_checker",
    "deployer": "rg_deployer",
    "rollback": "rg_rollback",
    "ops": "rg_ops",
    "api": "rg_api",
    "notifier": "rg_notifier",
}
VERIFIER_DB_ROLE = "rg_verifier"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RG_", extra="ignore")

    deployment: str = "development"
    env: str = Field(
        default="production",
        description="`local` only on the local stack: the one place demo keys (examples/keys/) are trusted.",
    )
    kafka_bootstrap: str = "127.0.0.1:19092"
    principal: str | None = Field(default=None, description="Kafka SASL/SCRAM user (one per service).")
    kafka_password: SecretStr | None = None
    kafka_password_file: Path | None = Field(
        default=None, description="File holding the SCRAM password; default <secrets_dir>/kafka/<principal>.password."
    )
    kafka_ca_file: Path | None = Field(default=None, description="CA bundle: SASL over TLS (SASL_SSL) when set.")
    secrets_dir: Path = REPO_ROOT / ".run" / "secrets"
    bus_policy_file: Path = Field(
        default=REPO_ROOT / "deploy" / "kafka" / "acls.yaml",
        description="Principals and ACLs of the bus; the coordinator learns who writes which result topic.",
    )
    signing_key_file: Path | None = Field(
        default=None, description="This service's ed25519 private key (the coordinator signs step grants with it)."
    )
    coordinator_public_key_file: Path | None = Field(
        default=None,
        description="The coordinator's ed25519 public key (deployer and rollback verify step grants with it).",
    )
    database_url: str = Field(
        default="",
        description="Control database; default: the principal's own role "
        "(DB_ROLES) with its password from <secrets_dir>/postgres/<role>.password.",
    )
    database_host: str = "127.0.0.1:15432"
    db_role: str | None = Field(default=None, description="PostgreSQL role to use instead of the principal's.")
    catalog_dir: Path = REPO_ROOT / "catalog"
    artifact_store: Path = REPO_ROOT / ".cache" / "store"
    run_dir: Path = REPO_ROOT / ".run"
    log_level: str = "INFO"
    otlp_endpoint: str | None = None
    haproxy_admin: str = Field(
        default="",
        description="HAProxy runtime API: a unix socket path (default "
        "<run_dir>/haproxy/admin.sock, owner-only) or host:port.",
    )
    health_port: int | None = None
    consumer_fetch_wait_ms: int = Field(
        default=100,
        ge=1,
        le=500,
        description="Longest a consumer's fetch waits at the broker (RG_CONSUMER_FETCH_WAIT_MS). aiokafka leaves a "
        "partition out of the next fetch while its record is being handled, so the next record there waits for "
        "the fetch in flight: this bounds that wait (the broker answers at once when data arrives otherwise).",
    )
    consumer_workers: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Group members per process (RG_CONSUMER_WORKERS): each handles the partitions Kafka assigns it "
        "in order, concurrently with the others; a release stays on one partition, so its events stay in order.",
    )
    consumer_batch: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Most records a batching consumer (the coordinator) decides in one transaction "
        "(RG_CONSUMER_BATCH): what one fetch returned, up to this many. 1 decides each record on its own.",
    )
    policy_dir: Path = REPO_ROOT / "policies"
    calendar_file: Path = REPO_ROOT / "policies" / "calendar.yaml"
    environments_dir: Path = REPO_ROOT / "deploy" / "environments"
    parity_file: Path = Field(
        default=REPO_ROOT / "deploy" / "parity.yaml",
        description="Documented, accepted differences between staging and production (RG_PARITY_FILE)",
    )
    edge_dir: Path = Field(
        default=REPO_ROOT / "deploy" / "varnish", description="Edge cache configuration the parity report reads"
    )

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

    @property
    def attester_keys(self) -> dict[str, Path]:
        """Public keys of the services that sign operator commands for people they authenticated: the API (OIDC
        logins). Per machine, in the secrets folder (`python -m releasegate_runtime.secrets`)."""
        return {"api": self.secrets_dir / "keys" / "api.pub.json"}

    _explicit_database_url: bool = PrivateAttr(default=False)

    def role_dsn(self, role: str, database: str = "releasegate") -> str:
        """The DSN of `role`, its password from the secrets folder (the placeholder if there is none, which the
        validator refuses outside development)."""
        try:
            password = (self.secrets_dir / "postgres" / f"{role}.password").read_text().strip()
        except OSError:
            password = "releasegate"
        return f"postgresql://{quote(role)}:{quote(password, safe='')}@{self.database_host}/{database}"

    def database_role(self) -> str:
        if self.db_role:
            return self.db_role
        if self.principal and self.principal.startswith("verifier-"):
            return VERIFIER_DB_ROLE
        return DB_ROLES.get(self.principal or "", OWNER_ROLE)

    def for_principal(self, name: str) -> Self:
        """These settings for the service `name`: its Kafka principal (unless RG_PRINCIPAL says otherwise) and,
        unless RG_DATABASE_URL is given, its own PostgreSQL role."""
        copy = self.model_copy(update={"principal": self.principal or name})
        if not self._explicit_database_url:
            copy.database_url = copy.role_dsn(copy.database_role())
        copy._explicit_database_url = self._explicit_database_url
        return copy

    @model_validator(mode="after")
    def _haproxy_socket(self) -> ServiceSettings:
        if not self.haproxy_admin:
            self.haproxy_admin = str(self.run_dir / "haproxy" / "admin.sock")
        return self

    @model_validator(mode="after")
    def _database_of_the_role(self) -> ServiceSettings:
        self._explicit_database_url = bool(self.database_url)
        if not self.database_url:
            self.database_url = self.role_dsn(self.database_role())
        return self

    @model_validator(mode="after")
    def _no_placeholder_secrets_outside_development(self) -> ServiceSettings:
        if self.deployment != "development":
            password = urlsplit(self.database_url).password or ""
            if password in PLACEHOLDER_PASSWORDS:
                raise ValueError("RG_DATABASE_URL uses a placeholder password outside development")
        return self


class TargetSettings(ServiceSettings):
    """Settings of the services that act on environments through their deployment targets (the deployer and the
    rollback service): how they reach a `kubernetes` target. Each acts in a cluster as its own ServiceAccount, so
    each reads its own kubeconfig setting: `kubeconfig_file()` is the kubeconfig the service acts with and
    `KUBECONFIG_SETTING` the variable that names it (here the deployer's, RG_KUBECONFIG; the rollback service's
    settings, services/rollback/config.py, read RG_ROLLBACK_KUBECONFIG and never RG_KUBECONFIG)."""

    KUBECONFIG_SETTING: ClassVar[str] = "RG_KUBECONFIG"

    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig of the deployer's ServiceAccount (`releasegate`), for environments whose catalog "
        "target is `kubernetes` (RG_KUBECONFIG); unset inside a Pod (KUBERNETES_SERVICE_HOST set), the Pod's own "
        "ServiceAccount (in-cluster configuration); unset elsewhere, such environments refuse every step with "
        "the reason.",
    )
    rollout_timeout_seconds: float = Field(
        default=120.0, gt=0, description="kubernetes: longest wait for a Deployment to roll out"
    )
    edge_url: str = Field(
        default="http://127.0.0.1:18088", description="The edge cache (Varnish) as shoppers reach it (RG_EDGE_URL)"
    )
    edge_admin: str = Field(
        default="127.0.0.1:18089", description="The edge's management CLI, host:port (RG_EDGE_ADMIN)"
    )
    edge_secret_file: Path | None = Field(
        default=None, description="The edge's CLI secret; default <secrets_dir>/varnish/secret (RG_EDGE_SECRET_FILE)"
    )

    def edge_secret(self) -> Path:
        return self.edge_secret_file or self.secrets_dir / "varnish" / "secret"

    def kubeconfig_file(self) -> Path | None:
        """The kubeconfig this service acts with in a cluster (the setting `KUBECONFIG_SETTING`); None: in a Pod,
        the Pod's own ServiceAccount."""
        return self.kubeconfig
