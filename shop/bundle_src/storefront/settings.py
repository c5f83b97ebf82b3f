"""Runtime settings of one storefront instance, from the environment and the bundle's `bundle.json`."""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUNDLE_JSON = Path(__file__).resolve().parent.parent / "bundle.json"


@dataclass(frozen=True)
class Settings:
    port: int
    environment: str
    instance: str
    version: str
    kafka_bootstrap: str
    database_url: str = field(repr=False)
    payment_url: str
    events_topic: str
    erp_url: str
    erp_adopt_after_s: float
    kafka_username: str | None = None
    kafka_password: str | None = field(default=None, repr=False)
    kafka_ca_file: str | None = None

    @classmethod
    def from_env(cls, bundle_json: Path = BUNDLE_JSON) -> Settings:
        env = os.environ
        port = int(env.get("SHOP_PORT", "20100"))
        return cls(
            port=port,
            environment=env.get("SHOP_ENVIRONMENT", "staging"),
            instance=env.get("SHOP_INSTANCE_ID", f"shop-{port}"),
            version=json.loads(bundle_json.read_text())["version"],
            kafka_bootstrap=env.get("SHOP_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
            database_url=env.get("SHOP_DATABASE_URL", "postgresql://releasegate:releasegate@127.0.0.1:15432/shop"),
            payment_url=env.get("SHOP_PAYMENT_URL", "http://127.0.0.1:18090").rstrip("/"),
            events_topic=env.get("SHOP_EVENTS_TOPIC", "shop.events"),
            erp_url=env.get("SHOP_ERP_URL", env.get("ERP_SANDBOX_URL", "http://127.0.0.1:18091")).rstrip("/"),
            # How long another version's pending ERP exports are left to it before this instance takes them over.
            erp_adopt_after_s=float(env.get("SHOP_ERP_ADOPT_AFTER_SECONDS", "60")),
            kafka_username=env.get("SHOP_KAFKA_USERNAME") or None,
            kafka_password=env.get("SHOP_KAFKA_PASSWORD"),
            kafka_ca_file=env.get("SHOP_KAFKA_CA_FILE") or None,
        )

    def kafka_security(self) -> dict[str, Any]:
        """aiokafka options: SASL/SCRAM-SHA-512 as the shop's principal when a user is given (over TLS with a CA
        file), else an anonymous plaintext client."""
        if not self.kafka_username:
            return {}
        tls = ssl.create_default_context(cafile=self.kafka_ca_file) if self.kafka_ca_file else None
        return {
            "security_protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
            "ssl_context": tls,
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": self.kafka_username,
            "sasl_plain_password": self.kafka_password or "",
        }
