"""Verifier registry: the coordinator records every verifier instance's last heartbeat (sent on the verifier's own
result topic) and answers who is alive to verify what. A verifier is alive while one of its instances was heard from within
3 of its heartbeat intervals."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from contracts.cloudevents import Envelope
from contracts.events import VerifierHeartbeat

ALIVE_INTERVALS = 3
FORGET_AFTER = timedelta(days=1)

# Heartbeats may be re-read (redelivery, a replayed topic): an older one never overwrites a newer one, so the
# upsert is idempotent without recording every heartbeat's id.
UPSERT = """
INSERT INTO verifier_registry (name, instance, version, services, environments, kpis, interval_seconds, first_seen,
                               last_heartbeat)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
ON CONFLICT (name, instance) DO UPDATE SET version = EXCLUDED.version, services = EXCLUDED.services,
    environments = EXCLUDED.environments, kpis = EXCLUDED.kpis, interval_seconds = EXCLUDED.interval_seconds,
    last_heartbeat = EXCLUDED.last_heartbeat
WHERE verifier_registry.last_heartbeat < EXCLUDED.last_heartbeat
"""
ALIVE = f"last_heartbeat >= $1::timestamptz - make_interval(secs => interval_seconds * {ALIVE_INTERVALS})"
# one row per verifier, however many instances it ever had (a restart brings a new instance id, kept for a day):
# the coordinator reads this on every saga decision, and reading every instance row made each decision slower
KNOWN = f"""
SELECT name, bool_or(alive) AS alive,
       coalesce(array_agg(DISTINCT service) FILTER (WHERE service IS NOT NULL), '{{}}') AS services,
       coalesce(array_agg(DISTINCT service) FILTER (WHERE service IS NOT NULL AND alive), '{{}}') AS alive_services
FROM (SELECT r.name, s.service, {ALIVE} AS alive
      FROM verifier_registry r LEFT JOIN LATERAL unnest(r.services) AS s(service) ON true) AS instances
GROUP BY name
"""


async def record(conn: asyncpg.Connection, hb: VerifierHeartbeat) -> None:
    """Upsert the instance's row; instances of the same verifier silent for a day are forgotten (restarts
    bring new instance ids)."""
    await conn.execute(
        UPSERT, hb.name, hb.instance, hb.version, hb.services, hb.environments, hb.kpis, hb.interval_seconds, hb.sent_at
    )
    await conn.execute(
        "DELETE FROM verifier_registry WHERE name = $1 AND last_heartbeat < $2", hb.name, hb.sent_at - FORGET_AFTER
    )


class Registry:
    """Handler of verifier heartbeats for the coordinator (their sender is checked first: `results`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def on_heartbeat(self, envelope: Envelope) -> None:
        heartbeat: VerifierHeartbeat = envelope.data  # type: ignore[assignment]
        if heartbeat.sent_at < datetime.now(UTC) - FORGET_AFTER:  # a replayed topic must not revive the long gone
            return
        async with self._pool.acquire() as conn, conn.transaction():
            await record(conn, heartbeat)


@dataclass(frozen=True)
class Known:
    """The verifiers the registry holds at `now`: `alive` (a heartbeat within ALIVE_INTERVALS of their interval)
    and `registered` (alive or not), each name → the services its instances cover (`*` = all)."""

    alive: dict[str, set[str]]
    registered: dict[str, set[str]]


async def known_verifiers(conn: asyncpg.Connection, now: datetime) -> Known:
    """One read of the registry for a saga decision: liveness says whom a step may still wait for; registration
    says whose verdict counts. A verdict is judged by registration, not liveness: under a backlog the verifier's
    newer heartbeats may be queued behind its verdict, and an honest verdict must not be refused for that."""
    return known_of(await conn.fetch(KNOWN, now))


def known_of(rows: Iterable[Mapping[str, Any]]) -> Known:
    """`Known` from `KNOWN`'s rows (records, or the same columns as JSON objects)."""
    rows = list(rows)
    registered = {row["name"]: set(row["services"]) for row in rows}
    alive = {row["name"]: set(row["alive_services"]) for row in rows if row["alive"]}
    return Known(alive, registered)


async def alive_verifiers(conn: asyncpg.Connection, now: datetime) -> dict[str, set[str]]:
    """Name of every alive verifier → the services its alive instances cover (`*` = all)."""
    rows = await conn.fetch(f"SELECT name, services FROM verifier_registry WHERE {ALIVE}", now)
    alive: dict[str, set[str]] = {}
    for row in rows:
        alive.setdefault(row["name"], set()).update(row["services"])
    return alive


@dataclass(frozen=True)
class VerifierStatus:
    """One verifier as the registry knows it; what it covers is taken from its alive instances (or, if none is
    alive, from the last one heard from)."""

    name: str
    versions: list[str]
    instances: int
    alive_instances: int
    services: list[str]
    environments: list[str]
    kpis: list[str]
    last_heartbeat: datetime
    alive: bool

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            **asdict(self),
            "last_heartbeat": self.last_heartbeat.isoformat(),
            "last_heartbeat_age_seconds": round((now - self.last_heartbeat).total_seconds(), 1),
        }


async def statuses(
    conn: asyncpg.Connection, now: datetime, heard_since: datetime | None = None
) -> list[VerifierStatus]:
    """Every verifier heard from since `heard_since` (all if None), by name."""
    rows = await conn.fetch(
        f"SELECT *, {ALIVE} AS alive FROM verifier_registry"
        " WHERE name IN (SELECT name FROM verifier_registry GROUP BY name"
        "                HAVING $2::timestamptz IS NULL OR max(last_heartbeat) >= $2)"
        " ORDER BY name, last_heartbeat DESC",
        now,
        heard_since,
    )
    by_name: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    result = []
    for name, instances in by_name.items():
        alive = [r for r in instances if r["alive"]]
        covering = alive or instances[:1]
        result.append(
            VerifierStatus(
                name=name,
                versions=sorted({r["version"] for r in covering}),
                instances=len(instances),
                alive_instances=len(alive),
                services=_union(covering, "services"),
                environments=_union(covering, "environments"),
                kpis=_union(covering, "kpis"),
                last_heartbeat=instances[0]["last_heartbeat"],
                alive=bool(alive),
            )
        )
    return result


def _union(rows: list[asyncpg.Record], column: str) -> list[str]:
    return sorted({value for row in rows for value in row[column]})
