"""Deployer settings: where HAProxy's runtime API is and what the shop instances need to know (and nothing else:
candidates get only these SHOP_* variables, never the deployer's own environment)."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.common.settings import ServiceSettings
from services.deployer.domain import DeployError


class DeployerSettings(ServiceSettings):
    shop_database_url: str = Field(default="postgresql://releasegate:releasegate@127.0.0.1:15432/shop",
                                   description="The shop's production database, as the shop's own role.")
    shop_staging_database_url: str = "postgresql://releasegate:releasegate@127.0.0.1:15432/shop_staging"
    shop_payment_url: str = "http://127.0.0.1:18090"
    shop_erp_url: str = "http://127.0.0.1:18091"
    shop_kafka_username: str = Field(default="shop", description="The shop's Kafka principal (candidate code may "
                                     "only publish its business events).")
    shop_kafka_password_file: Path | None = Field(default=None, description="The shop principal's SCRAM password; "
                                                  "default <secrets_dir>/kafka/shop.password.")
    candidate_user: str = Field(default="rg-candidate", description="Unprivileged OS user candidates run as when "
                                "the deployer runs as root (created if missing).")
    candidate_path: str | None = Field(default=None, description="PATH of candidate processes (default: the "
                                       "deployer's); its interpreter must be readable by the candidate user.")

    def shop_database(self, environment: str) -> str:
        """Each environment has its own database, so staging runs migrations before production sees them."""
        return self.shop_staging_database_url if environment == "staging" else self.shop_database_url

    def shop_kafka_password(self) -> str:
        path = self.shop_kafka_password_file or self.secrets_dir / "kafka" / f"{self.shop_kafka_username}.password"
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise DeployError(f"no Kafka password for the shop principal {self.shop_kafka_username}: {exc}") from None

    def shop_env(self, environment: str) -> dict[str, str]:
        """The SHOP_* settings of an instance in `environment` (the launcher adds the instance's own)."""
        return {"SHOP_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "SHOP_KAFKA_USERNAME": self.shop_kafka_username,
                "SHOP_KAFKA_PASSWORD": self.shop_kafka_password(),
                "SHOP_DATABASE_URL": self.shop_database(environment), "SHOP_PAYMENT_URL": self.shop_payment_url,
                "SHOP_ERP_URL": self.shop_erp_url, "SHOP_EVENTS_TOPIC": "shop.events"}
