"""Deployer settings: where HAProxy's runtime API is and what the shop instances need to know."""
from __future__ import annotations

from services.common.settings import ServiceSettings


class DeployerSettings(ServiceSettings):
    shop_database_url: str = "postgresql://releasegate:releasegate@127.0.0.1:15432/shop"
    shop_staging_database_url: str = "postgresql://releasegate:releasegate@127.0.0.1:15432/shop_staging"
    shop_payment_url: str = "http://127.0.0.1:18090"

    def shop_database(self, environment: str) -> str:
        """Each environment has its own database, so staging runs migrations before production sees them."""
        return self.shop_staging_database_url if environment == "staging" else self.shop_database_url

    def shop_env(self, environment: str) -> dict[str, str]:
        return {"RG_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "SHOP_DATABASE_URL": self.shop_database(environment),
                "SHOP_PAYMENT_URL": self.shop_payment_url, "SHOP_EVENTS_TOPIC": "shop.events"}
