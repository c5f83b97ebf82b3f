"""The sample shop's data as the shop team's verifiers read it: where it lives, and the orders a release's
candidate placed during a verification window (from the shop database of the request's environment)."""

from __future__ import annotations

import asyncpg

from contracts import topics
from releasegate_runtime import db
from releasegate_runtime.settings import VERIFIER_DB_ROLE, ServiceSettings
from releasegate_sdk import TransientError, VerificationRequest
from releasegate_sdk.types import describe

ORDERS_SQL = """
SELECT id::text AS id, tenant, region, tax_cents, lines, created_at FROM orders
WHERE environment = $1 AND version = $2 AND created_at >= $3 AND created_at < $4 ORDER BY created_at
"""


class ShopSettings(ServiceSettings):
    """`RG_SHOP_DATABASE_URL`, `RG_SHOP_STAGING_DATABASE_URL`, `RG_SHOP_ERP_URL`, `RG_SHOP_EVENTS_TOPIC`, next to
    the RG_* settings of every service. Built per check, so a test can point a check elsewhere."""

    shop_database_url: str = ""  # default: the verifiers' read-only role on `shop`
    shop_staging_database_url: str = ""
    shop_erp_url: str = "http://127.0.0.1:18091"
    shop_events_topic: str = topics.SHOP_EVENTS

    def shop_database(self, environment: str) -> str:
        if environment == "staging":
            return self.shop_staging_database_url or self.role_dsn(VERIFIER_DB_ROLE, "shop_staging")
        return self.shop_database_url or self.role_dsn(VERIFIER_DB_ROLE, "shop")


async def candidate_orders(req: VerificationRequest, settings: ShopSettings) -> list[asyncpg.Record]:
    """Orders the candidate placed in the request's environment during its window, oldest first: `id` (text),
    `tenant`, `region`, `tax_cents`, `lines` (JSON text), `created_at`."""
    try:
        conn = await asyncpg.connect(settings.shop_database(req.environment), timeout=5)
        try:
            return await conn.fetch(
                ORDERS_SQL, req.environment, req.candidate_version, req.window_start, req.window_end
            )
        finally:
            await conn.close()
    except db.UNAVAILABLE as exc:
        raise TransientError(f"shop database of {req.environment}: {describe(exc)}") from None
