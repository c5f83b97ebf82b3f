"""Verifier handlers: ingest business events, accept verification requests, and judge due verifications."""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import KpiResult, Verdict, VerificationFinished, VerificationRequested
from services.common import db, outbox, telemetry, worker
from services.verifier import synthetic
from services.verifier.adapters.store import KpiStore
from services.verifier.adapters.prometheus import PrometheusProvider
from services.verifier.domain import judge, merge_verdicts

CONSUMER = "verifier"
SOURCE = "releasegate/verifier"
log = structlog.get_logger()


def utcnow() -> datetime:
    return datetime.now(UTC)


class Verifier:
    def __init__(self, pool: asyncpg.Pool, store: KpiStore, ingested_until: Callable[[], datetime | None],
                 prometheus: PrometheusProvider | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self._pool, self._store, self._clock = pool, store, clock
        self._ingested_until, self._prometheus = ingested_until, prometheus

    async def on_request(self, envelope: Envelope) -> None:
        req: VerificationRequested = envelope.data  # type: ignore[assignment]
        if req.synthetic is not None:
            await worker.reply_once(self._pool, CONSUMER, envelope, lambda: self.synthetic(req))
            return
        if await worker.already_done(self._pool, CONSUMER, envelope.id):
            return
        journeys = None
        if req.journeys is not None:
            targets = await self._store.targets(req.service, req.environment, req.candidate_version)
            verdict, reason, kpis = await synthetic.run(req.journeys, targets)
            journeys = [k.model_dump(mode="json") for k in kpis]
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            if not await db.first_time(conn, CONSUMER, envelope.id):
                return
            body = {"request": req.model_dump(mode="json"), "trace": envelope.trace, "journeys": journeys}
            await conn.execute(
                "INSERT INTO verifications (release_id, step_id, request, started_at, due_at) VALUES ($1,$2,$3,$4,$5)"
                " ON CONFLICT (release_id, step_id) DO UPDATE SET request = EXCLUDED.request,"
                " started_at = EXCLUDED.started_at, due_at = EXCLUDED.due_at, finished = false, verdict = NULL",
                req.release_id, req.step_id, body, now, now + timedelta(seconds=req.window_seconds))
        log.info("verification started", step=req.step_id, window=req.window_seconds)

    async def synthetic(self, req: VerificationRequested) -> VerificationFinished:
        assert req.synthetic is not None
        started = self._clock()
        targets = await self._store.targets(req.service, req.environment, req.candidate_version)
        verdict, reason, kpis = await synthetic.run(req.synthetic, targets)
        log.info("synthetic verdict", step=req.step_id, verdict=verdict.value, reason=reason)
        return VerificationFinished(release_id=req.release_id, step_id=req.step_id, environment=req.environment,
                                    verdict=verdict, reason=reason, kpis=kpis, window_start=started,
                                    window_end=self._clock(), verifier="synthetic-journeys")

    async def judge_open(self) -> int:
        """Judge every open verification once; returns how many reached a verdict."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch("SELECT release_id, step_id, request, started_at, due_at FROM verifications"
                                    " WHERE NOT finished ORDER BY due_at")
        decided = 0
        for row in rows:
            decided += await self._judge(row)
        return decided

    async def _judge(self, row: asyncpg.Record) -> int:
        req = VerificationRequested.model_validate(row["request"]["request"])
        now = self._clock()
        # Too few samples at the end of the window extends it, once, to twice its length before giving up.
        hard_end = row["started_at"] + timedelta(seconds=2 * req.window_seconds)
        end = min(now, hard_end)
        candidate = await self._store.counts(req.environment, req.candidate_version, row["started_at"], end,
                                             req.tenants)
        baseline = await self._store.counts(req.environment, req.stable_version, row["started_at"], end)
        caught_up = self._ingested_until()
        final = now >= row["due_at"] and caught_up is not None and caught_up >= row["due_at"]
        verdict, reason, kpis = judge(req.thresholds, candidate, baseline, req.min_samples, final=final,
                                      alpha=req.false_rollback_bound)
        if req.prometheus and self._prometheus is not None:
            window = int((end - row["started_at"]).total_seconds())
            prom = await self._prometheus.kpis(req.prometheus, req.candidate_version, req.environment, window)
            verdict, reason = merge_verdicts(verdict, reason, prom, final)
            kpis = kpis + prom
        if row["request"].get("journeys"):
            journeys = [KpiResult.model_validate(k) for k in row["request"]["journeys"]]
            verdict, reason = merge_verdicts(verdict, reason, journeys, final)
            kpis = kpis + journeys
        if verdict is None or (verdict is Verdict.INCONCLUSIVE and now < hard_end):
            return 0
        result = VerificationFinished(release_id=req.release_id, step_id=req.step_id, environment=req.environment,
                                      verdict=verdict, reason=reason, kpis=kpis, window_start=row["started_at"],
                                      window_end=end)
        async with self._pool.acquire() as conn, conn.transaction():
            done = await conn.execute("UPDATE verifications SET finished = true, verdict = $3"
                                      " WHERE release_id = $1 AND step_id = $2 AND NOT finished",
                                      req.release_id, req.step_id, result.model_dump(mode="json"))
            if done != "UPDATE 1":
                return 0
            trace = row["request"].get("trace") or telemetry.inject()
            await outbox.add(conn, CONSUMER, topics.RESULTS, Envelope.new(result, SOURCE, req.release_id, trace=trace))
        log.info("verdict", release_id=req.release_id, step=req.step_id, verdict=verdict.value, reason=reason)
        return 1
