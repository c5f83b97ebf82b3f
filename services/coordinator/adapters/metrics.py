"""The coordinator's gauges, sampled from its own tables at each scrape: releases by state, how long releases in
flight have been in their current step, and whether each verifier the catalog requires is alive. Every query is
bounded (a LIMIT, and at most a day of ended releases)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from contracts.events import TERMINAL_STATES, ReleaseState
from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_platform.verifier_registry import alive_verifiers
from releasegate_runtime import metrics

ROWS_LIMIT = 10_000
TERMINAL = sorted(s.value for s in TERMINAL_STATES)

RELEASES = """
SELECT state, count(*) AS n FROM (
    SELECT state FROM sagas WHERE state <> ALL($1::text[]) OR updated_at > now() - interval '1 day' LIMIT $2
) recent GROUP BY state
"""
# time since the saga last moved (each decision saves it); the step is the plan's step at the cursor, or the
# compensation under way
STEP_AGES = """
SELECT service, state,
       CASE WHEN body->>'waiting_for' LIKE 'compensate:%' THEN 'rollback'
            ELSE coalesce(body->'plan'->((body->>'cursor')::int)->>'kind', 'none') END AS step_kind,
       max(extract(epoch FROM now() - updated_at)) AS age
FROM (SELECT service, state, body, updated_at FROM sagas WHERE state <> ALL($1::text[]) LIMIT $2) in_flight
GROUP BY 1, 2, 3
"""


def required_verifiers(catalog_dir: Path) -> dict[str, set[str]]:
    """Service → the verifiers its catalog entry requires in any environment (entries that do not load are
    skipped: the coordinator refuses their releases anyway)."""
    catalog, required = Catalog(catalog_dir), {}
    for path in sorted(catalog_dir.glob("*.yaml")):
        try:
            entry = catalog.get(path.stem)
        except CatalogError:
            continue
        required[entry.name] = {v for env in entry.environments for v in entry.verification.verifiers(env).required}
    return required


def sampler(pool: asyncpg.Pool, catalog_dir: Path) -> metrics.Sampler:
    async def sample() -> None:
        required = await asyncio.to_thread(required_verifiers, catalog_dir)
        async with pool.acquire(timeout=metrics.SAMPLE_TIMEOUT_SECONDS) as conn:
            releases = await conn.fetch(RELEASES, TERMINAL, ROWS_LIMIT)
            ages = await conn.fetch(STEP_AGES, TERMINAL, ROWS_LIMIT)
            alive = await alive_verifiers(conn, datetime.now(UTC))
        # all at once, with no await in between: a scrape never sees half of them
        for state in ReleaseState:
            metrics.RELEASES.labels(state.value).set(0)
        for row in releases:
            metrics.RELEASES.labels(row["state"]).set(row["n"])
        metrics.RELEASE_STEP_AGE.clear()
        for row in ages:
            metrics.RELEASE_STEP_AGE.labels(row["service"], row["state"], row["step_kind"]).set(float(row["age"]))
        metrics.VERIFIER_ALIVE.clear()
        for service, names in required.items():
            for name in names:
                covers = alive.get(name, set())
                metrics.VERIFIER_ALIVE.labels(name, service).set(1 if "*" in covers or service in covers else 0)

    return sample
