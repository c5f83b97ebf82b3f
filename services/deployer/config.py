"""Deployer settings: where HAProxy's runtime API is and what the shop instances need to know (and nothing else:
candidates get only these SHOP_* variables, never the deployer's own environment)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from releasegate_runtime.settings import TargetSettings
from services.deployer.domain import DeployError

SHOP_ROLE = "rg_shop"
CANDIDATE_RUNTIME = Path("/opt/releasegate/candidate-runtime")  # deploy/stack.sh install


def _candidate_runtime_path() -> str | None:
    if (CANDIDATE_RUNTIME / "bin" / "python").exists():
        return f"{CANDIDATE_RUNTIME / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    return None


class DeployerSettings(TargetSettings):
    shop_database_url: str = Field(
        default="",
        description="The shop's production database as candidates see it: "
        "the shop's own role (rg_shop: its tables only, never the control database).",
    )
    shop_staging_database_url: str = ""
    shop_payment_url: str = "http://127.0.0.1:18090"
    shop_erp_url: str = "http://127.0.0.1:18091"
    shop_kafka_username: str = Field(
        default="shop", description="The shop's Kafka principal (candidate code may only publish its business events)."
    )
    shop_kafka_password_file: Path | None = Field(
        default=None, description="The shop principal's SCRAM password; default <secrets_dir>/kafka/shop.password."
    )
    candidate_user: str = Field(
        default="rg-candidate",
        description="Unprivileged OS user candidates run as when the deployer runs as root (created if missing).",
    )
    candidate_path: str | None = Field(
        default_factory=lambda: _candidate_runtime_path(),
        description="PATH of "
        "candidate processes (default: the stack's candidate runtime if installed, "
        "else the deployer's); its interpreter must be readable by the candidate user.",
    )

    def shop_database(self, environment: str) -> str:
        """Each environment has its own database, so staging runs migrations before production sees them."""
        database = "shop_staging" if environment == "staging" else "shop"
        explicit = self.shop_staging_database_url if environment == "staging" else self.shop_database_url
        return explicit or self.role_dsn(SHOP_ROLE, database)

    def migration_database(self, environment: str) -> str:
        """The shop's database as the deployer itself: its own role, which acts as the schema's owner there."""
        return self.role_dsn(self.database_role(), "shop_staging" if environment == "staging" else "shop")

    def shop_kafka_password(self) -> str:
        path = self.shop_kafka_password_file or self.secrets_dir / "kafka" / f"{self.shop_kafka_username}.password"
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise DeployError(f"no Kafka password for the shop principal {self.shop_kafka_username}: {exc}") from None

    def shop_env(self, environment: str) -> dict[str, str]:
        """The SHOP_* settings of an instance in `environment` (the launcher adds the instance's own)."""
        env = {
            "SHOP_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "SHOP_KAFKA_USERNAME": self.shop_kafka_username,
            "SHOP_KAFKA_PASSWORD": self.shop_kafka_password(),
            "SHOP_DATABASE_URL": self.shop_database(environment),
            "SHOP_PAYMENT_URL": self.shop_payment_url,
            "SHOP_ERP_URL": self.shop_erp_url,
            "SHOP_EVENTS_TOPIC": "shop.events",
        }
        if self.kafka_ca_file is not None:
            env["SHOP_KAFKA_CA_FILE"] = str(self.kafka_ca_file)
        return env
