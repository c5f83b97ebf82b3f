"""Runtime settings of one storefront instance, from the environment and the bundle's `bundle.json`."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

BUNDLE_JSON = Path(__file__).resolve().parent.parent / "bundle.json"


@dataclass(frozen=True)
class Settings:
    port: int
    environment: str
    instance: str
    version: str
    kafka_bootstrap: str
    database_url: str
    payment_url: str
    events_topic: str
    erp_url: str
    erp_adopt_after_s: float

    @classmethod
    def from_env(cls, bundle_json: Path = BUNDLE_JSON) -> Settings:
        env = os.environ
        port = int(env.get("SHOP_PORT", "20100"))
        return cls(
            port=port,
            environment=env.get("SHOP_ENVIRONMENT", "staging"),
            instance=env.get("SHOP_INSTANCE_ID", f"shop-{port}"),
            version=json.loads(bundle_json.read_text())["version"],
            kafka_bootstrap=env.get("RG_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
            database_url=env.get("SHOP_DATABASE_URL", "postgresql://releasegate:releasegate@127.0.0.1:15432/shop"),
            payment_url=env.get("SHOP_PAYMENT_URL", "http://127.0.0.1:18090").rstrip("/"),
            events_topic=env.get("SHOP_EVENTS_TOPIC", "shop.events"),
            erp_url=env.get("ERP_SANDBOX_URL", "http://127.0.0.1:18091").rstrip("/"),
            # How long another version's pending ERP exports are left to it before this instance takes them over.
            erp_adopt_after_s=float(env.get("SHOP_ERP_ADOPT_AFTER_SECONDS", "60")),
        )
