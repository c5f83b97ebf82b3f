"""The core verifier's tables in PostgreSQL: business events and HTTP samples, counted per version over a window,
and its projection of the deployer's read model (`verifier_environments`, from `release.environments`): where
each version's instances serve."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from contracts.events import EnvironmentState
from releasegate_platform.environments import PostgresProjection
from services.verifier.domain import Counts, endpoints_of

COUNTS_SQL = """
SELECT tenant,
  count(*) FILTER (WHERE type = 'shop.checkout.succeeded.v1') AS checkout_succeeded,
  count(*) FILTER (WHERE type = 'shop.checkout.failed.v1')    AS checkout_failed,
  count(*) FILTER (WHERE type = 'shop.payment.authorized.v1') AS payment_authorized,
  count(*) FILTER (WHERE type = 'shop.payment.declined.v1')   AS payment_declined,
  count(*) FILTER (WHERE type = 'shop.order.placed.v1')       AS orders,
  array_agg(latency_ms) FILTER (WHERE type = 'shop.checkout.succeeded.v1') AS checkout_latencies
FROM business_events WHERE environment = $1 AND version = $2 AND at >= $3 AND at < $4
  AND ($5::text[] IS NULL OR tenant = ANY($5::text[]))
GROUP BY tenant
"""
HTTP_SQL = """
SELECT count(*) AS total, count(*) FILTER (WHERE status >= 500) AS errors, array_agg(ta_ms) AS latencies
FROM http_samples WHERE environment = $1 AND version = $2 AND at >= $3 AND at < $4
  AND ($5::text[] IS NULL OR tenant = ANY($5::text[]))
"""


class KpiStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._environments = PostgresProjection(pool, "verifier_environments")

    async def add_business_events(self, rows: list[tuple]) -> None:
        async with self._pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO business_events (event_id, type, environment, version, tenant, at, reason, latency_ms)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT DO NOTHING",
                rows,
            )

    async def caught_up(self, topic: str, partitions: list[int]) -> datetime:
        """Record that `partitions` of `topic` are ingested up to now (the database's clock); that moment."""
        async with self._pool.acquire() as conn:
            return await conn.fetchval(
                "INSERT INTO ingest_watermarks (topic, partition, caught_up_at)"
                " SELECT $1, p, clock_timestamp() FROM unnest($2::int[]) AS p"
                " ON CONFLICT (topic, partition) DO UPDATE SET caught_up_at = EXCLUDED.caught_up_at"
                " RETURNING caught_up_at",
                topic,
                partitions,
            )

    async def ingested_until(self, topic: str, partitions: int) -> datetime | None:
        """The moment up to which every one of the topic's `partitions` is ingested (None: one never was)."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT min(caught_up_at) AS until, count(*) AS known FROM ingest_watermarks"
                " WHERE topic = $1 AND partition < $2",
                topic,
                partitions,
            )
        return row["until"] if row["known"] == partitions else None

    async def add_http_samples(self, rows: list[tuple[str, str, str | None, int, int, str | None]]) -> None:
        async with self._pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO http_samples (environment, server, version, status, ta_ms, tenant)"
                " VALUES ($1,$2,$3,$4,$5,$6)",
                rows,
            )

    async def counts(
        self, environment: str, version: str | None, start: datetime, end: datetime, tenants: list[str] | None = None
    ) -> Counts:
        if version is None:
            return Counts()
        async with self._pool.acquire() as conn:
            tenants_rows = await conn.fetch(COUNTS_SQL, environment, version, start, end, tenants)
            h = await conn.fetchrow(HTTP_SQL, environment, version, start, end, tenants)
        c = Counts(
            http_total=h["total"],
            http_5xx=h["errors"],
            latencies_ms=[float(x) for x in (h["latencies"] or []) if x is not None],
        )
        for b in tenants_rows:  # per tenant: the segments of the stratified tests
            c.checkout_succeeded += b["checkout_succeeded"]
            c.checkout_failed += b["checkout_failed"]
            c.payment_authorized += b["payment_authorized"]
            c.payment_declined += b["payment_declined"]
            c.orders += b["orders"]
            c.checkout_latencies_ms += [float(x) for x in (b["checkout_latencies"] or []) if x is not None]
            checkouts = b["checkout_succeeded"] + b["checkout_failed"]
            if checkouts:
                c.checkout_segments[b["tenant"]] = (b["checkout_succeeded"], checkouts)
            payments = b["payment_authorized"] + b["payment_declined"]
            if payments:
                c.payment_segments[b["tenant"]] = (b["payment_authorized"], payments)
        return c

    async def targets(self, service: str, environment: str, version: str) -> list[str]:
        """Base URLs of the version's serving instances, as the deployer last published them."""
        state = await self._environments.environment(service, environment)
        return [] if state is None else endpoints_of(state, version)

    async def keep_environment(self, state: EnvironmentState) -> bool:
        return await self._environments.keep_environment(state)
