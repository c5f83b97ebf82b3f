"""Deployer settings: where HAProxy's runtime API is and what the shop instances need to know."""
from __future__ import annotations

from services.common.settings import ServiceSettings


class DeployerSettings(ServiceSettings):
    shop_database_url: str = "postgresql://releasegate:releasegate@127.0.0.1:15432/shop"
    shop_payment_url: str = "http://127.0.0.1:18090"

    def shop_env(self) -> dict[str, str]:
        return {"RG_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "SHOP_DATABASE_URL": self.shop_database_url,
                "SHOP_PAYMENT_URL": self.shop_payment_url, "SHOP_EVENTS_TOPIC": "shop.events"}
