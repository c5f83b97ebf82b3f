"""One verifier's verification runs: each accepted request is persisted, followed by a task that looks at its
window as `schedule` says, and closed by the transaction that stages its verdict in the outbox. A restarted
verifier resumes its open runs; a redelivered request finds its event id processed and changes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import structlog
from opentelemetry import trace

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import SYNTHETIC_TIMEOUT_SECONDS, Verdict, VerificationFinished, VerificationRequested
from contracts.names import clip
from releasegate_runtime import db, metrics, outbox, telemetry
from releasegate_sdk import schedule
from releasegate_sdk.types import RETRYABLE, Result, TransientError, VerificationRequest, describe

Check = Callable[[VerificationRequest], Awaitable[Result]]
log = structlog.get_logger()
tracer = trace.get_tracer("releasegate.sdk")

UPSERT = """
INSERT INTO verifier_runs (verifier, release_id, step_id, request_id, request, trace, tenant, started_at, window_end,
                           deadline)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (verifier, release_id, step_id) DO UPDATE SET request_id = EXCLUDED.request_id,
    request = EXCLUDED.request, trace = EXCLUDED.trace, tenant = EXCLUDED.tenant, started_at = EXCLUDED.started_at,
    window_end = EXCLUDED.window_end, deadline = EXCLUDED.deadline, finished_at = NULL, verdict = NULL
"""
OPEN = (
    "SELECT request_id, request, trace, tenant, started_at, window_end, deadline FROM verifier_runs"
    " WHERE verifier = $1 AND finished_at IS NULL ORDER BY deadline"
)
CLOSE = (
    "UPDATE verifier_runs SET finished_at = now(), verdict = $5 WHERE verifier = $1 AND release_id = $2"
    " AND step_id = $3 AND request_id = $4 AND finished_at IS NULL"
)
STORE_ERRORS = db.UNAVAILABLE
STORE_RETRY_SECONDS = 1.0
MIN_CHECK_SECONDS = 5.0
SYNTHETIC_RETRY_SECONDS = 20.0  # a preview's transient failures (candidate not reachable yet) are retried this long
LATE_ANSWER_SECONDS = 600.0  # later than this past its due time: logged, not answered (no step waits so long)
DATA_LOOK_GAP_SECONDS = 0.25  # by default, new data brings a run's look forward at most this often
MIN_DATA_LOOK_GAP_SECONDS = 0.02  # the shortest gap a verifier may ask for


class Nudges:
    """New data for the checks (a verifier's own ingest calls `nudge`): every run waiting for its next look
    during its window looks now instead, so a decisive sample is judged as it arrives, not at the next tick."""

    def __init__(self) -> None:
        self._arrived = asyncio.Event()
        self.count = 0  # nudges so far: a run that notes it before a look knows afterwards whether data came since

    def nudge(self) -> None:
        self.count += 1
        self._arrived.set()
        self._arrived = asyncio.Event()  # waiters from now on wait for the next arrival

    async def wait(self, seconds: float) -> bool:
        """True when nudged within `seconds`, False when they passed."""
        try:
            await asyncio.wait_for(self._arrived.wait(), max(seconds, 0.0))
        except TimeoutError:
            return False
        return True


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Run:
    """An accepted request and its window; `request_id` (the command's event id) tells a re-issued step apart."""

    request_id: str
    raw: VerificationRequested
    window: schedule.Window
    trace: dict[str, str]
    tenant: str | None

    @property
    def key(self) -> tuple[str, str]:
        return self.raw.release_id, self.raw.step_id

    def request(self, final: bool, woken_by_data: bool = False) -> VerificationRequest:
        w = self.window
        return VerificationRequest.of(self.raw, w.start, w.end, w.deadline, final, woken_by_data)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Run:
        return cls(
            row["request_id"],
            VerificationRequested.model_validate(row["request"]),
            schedule.Window(row["started_at"], row["window_end"], row["deadline"]),
            row["trace"],
            row["tenant"],
        )


class Runs:
    """The verifier's requests, from acceptance to verdict. `skip` says why a request is not ours (or None)."""

    def __init__(
        self,
        *,
        name: str,
        consumer: str,
        pool: asyncpg.Pool,
        check: Check,
        skip: Callable[[VerificationRequested], str | None],
        looks_every: float | None,
        grace_seconds: float,
        clock: Callable[[], datetime] = utcnow,
        data_look_gap: float = DATA_LOOK_GAP_SECONDS,
        direct: outbox.DirectPublisher | None = None,
    ) -> None:
        """`direct`: publishes each verdict straight after the transaction that closed its run (None: the outbox
        relay does)."""
        self._name, self._consumer, self._pool, self._check, self._skip = name, consumer, pool, check, skip
        self._direct = direct
        self._gap = data_look_gap
        self._looks_every, self._grace, self._clock = looks_every, grace_seconds, clock
        self._source = f"releasegate/{consumer}"
        self._accepted: asyncio.Queue[Run] = asyncio.Queue()
        self.nudges = Nudges()

    async def accept(self, envelope: Envelope) -> None:
        """Subscriber of the verify topic: persist a request that is ours, then start following it."""
        req: VerificationRequested = envelope.data  # type: ignore[assignment]
        why = self._skip(req)
        if why is not None:
            log.debug("request skipped", step=req.step_id, service=req.service, environment=req.environment, reason=why)
            return
        now = self._clock()
        due = schedule.Window.of(envelope.time, req.window_seconds, self._grace).deadline
        synthetic_wait = timedelta(seconds=SYNTHETIC_TIMEOUT_SECONDS)
        if req.synthetic is not None:  # journeys run whenever they are asked; the coordinator waits this long
            due = max(due, envelope.time + synthetic_wait)
        if due < now:
            await self._answer_late(envelope, req, (now - due).total_seconds())
            return
        window = schedule.Window.of(now, req.window_seconds, self._grace)
        if req.synthetic is not None:
            # the candidate may not be reachable yet (its instances not yet published by a deployer that was busy
            # or restarting): a transient failure of the journeys is retried this long, within the coordinator's wait
            retry_until = min(now + timedelta(seconds=SYNTHETIC_RETRY_SECONDS), envelope.time + synthetic_wait)
            window = dataclasses.replace(window, deadline=max(window.deadline, retry_until))
        run = Run(envelope.id, req, window, envelope.trace, envelope.tenant)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await db.first_time(conn, self._consumer, envelope.id):
                return
            await self._open(conn, run)
        log.info(
            "verification started",
            step=req.step_id,
            window=req.window_seconds,
            deadline=run.window.deadline.isoformat(),
        )
        self._accepted.put_nowait(run)

    async def _answer_late(self, envelope: Envelope, req: VerificationRequested, late: float) -> None:
        """A request that arrived after its verdict was due (the verifier was down, or its group rebalancing):
        its window cannot be judged as asked, so it gets an inconclusive verdict naming that at once, and the
        coordinator applies its policy instead of waiting out its deadline. Once per request, like any verdict."""
        if late > LATE_ANSWER_SECONDS:
            log.warning("request too old to answer", step=req.step_id, late_seconds=round(late, 1))
            metrics.verdict(self._name, "too_late")
            return
        window = schedule.Window.of(envelope.time, req.window_seconds, self._grace)
        run = Run(envelope.id, req, window, envelope.trace, envelope.tenant)
        reason = (
            f"the request arrived {late:.1f}s after its verdict was due (window of {req.window_seconds:g}s from "
            f"{envelope.time:%H:%M:%S}); nothing was judged: the verifier was down or its consumer group rebalancing"
        )
        verdict = self._verdict(run, Result.inconclusive(reason), end=window.deadline)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await db.first_time(conn, self._consumer, envelope.id):
                return
            await self._open(conn, run)
            claimed = await self._stage(conn, run, verdict)  # the run opened just now: it closes
        self._published(claimed if claimed is not False else None)
        log.warning("request arrived late; inconclusive", step=req.step_id, late_seconds=round(late, 1))
        metrics.verdict(self._name, verdict.verdict.value)

    async def follow_all(self) -> None:
        """Background task: resume the open runs, then follow each accepted one; cancelling it cancels them."""
        following: dict[tuple[str, str], tuple[str, asyncio.Task[None]]] = {}
        async with self._pool.acquire() as conn:
            for row in await conn.fetch(OPEN, self._name):
                self._accepted.put_nowait(Run.from_row(row))
        try:
            while True:
                run = await self._accepted.get()
                current = following.get(run.key)
                if current is not None and current[0] == run.request_id and not current[1].done():
                    continue
                if current is not None:
                    current[1].cancel()  # the step was re-issued: its new request replaces the old one
                for key in [k for k, (_, task) in following.items() if task.done()]:
                    del following[key]
                following[run.key] = (run.request_id, asyncio.create_task(self._follow(run)))
        finally:
            for _, task in following.values():
                task.cancel()
            await asyncio.gather(*(task for _, task in following.values()), return_exceptions=True)

    async def _follow(self, run: Run) -> None:
        with structlog.contextvars.bound_contextvars(release_id=run.raw.release_id, step=run.raw.step_id):
            at, attempt = schedule.first_look(run.window, self._looks_every), 0
            loop = asyncio.get_running_loop()
            looked_at, seen = loop.time(), self.nudges.count  # when the last look began, and the nudges by then
            while True:
                wait = (at - self._clock()).total_seconds()
                if self._looks_every and at < run.window.end and attempt == 0:
                    # a look before the window's end: new data brings it forward, to no sooner than the gap after
                    # the last look began; data that came meanwhile (even during that look) brings it then
                    await asyncio.sleep(min(max(looked_at + self._gap - loop.time(), 0.0), max(wait, 0.0)))
                    left = (at - self._clock()).total_seconds()
                    nudged = self.nudges.count != seen and left > 0 or await self.nudges.wait(left)
                else:
                    await asyncio.sleep(max(0.0, wait))
                    nudged = False
                looked_at, seen = loop.time(), self.nudges.count
                final = at >= run.window.end and not nudged  # a nudged look is before the end
                try:
                    result = await self._ask(run, final, nudged)
                    if not isinstance(result, Result):
                        raise TypeError(f"the check returned {type(result).__name__}, not a Result")
                    step = schedule.after_answer(
                        run.window, result, final=final, now=self._clock(), looks_every=self._looks_every
                    )
                except Exception as exc:
                    attempt += 1
                    retryable = isinstance(exc, RETRYABLE)
                    log.warning(
                        "check raised",
                        error=describe(exc),
                        attempt=attempt,
                        retryable=retryable,
                        exc_info=not retryable,
                    )
                    step = schedule.after_error(
                        run.window, exc, attempt=attempt, retryable=retryable, now=self._clock()
                    )
                if isinstance(step, schedule.Finish):
                    await self._close(run, step.result)
                    return
                at = step.at

    async def _ask(self, run: Run, final: bool, nudged: bool = False) -> Result:
        """Run the check; one that hangs is cut off at the deadline (and given a few seconds after it)."""
        limit = max((run.window.deadline - self._clock()).total_seconds(), MIN_CHECK_SECONDS)
        with tracer.start_as_current_span(
            f"verifier {self._name} check",
            context=telemetry.extract(run.trace),
            attributes={
                "release_id": run.raw.release_id,
                "step": run.raw.step_id,
                "final_look": final,
                "woken_by_data": nudged,
            },
        ):
            try:
                return await asyncio.wait_for(self._check(run.request(final, nudged)), limit)
            except TimeoutError:
                raise TransientError(f"the check timed out after {limit:.1f}s") from None

    async def _open(self, conn: asyncpg.Connection, run: Run) -> None:
        req = run.raw
        await conn.execute(
            UPSERT,
            self._name,
            req.release_id,
            req.step_id,
            run.request_id,
            req.model_dump(mode="json"),
            run.trace,
            run.tenant,
            run.window.start,
            run.window.end,
            run.window.deadline,
        )

    def _verdict(self, run: Run, result: Result, *, end: datetime) -> VerificationFinished:
        try:
            kpis = result.kpis()
        except ValueError as exc:  # a measurement that is no number: report that, never drop the verdict
            result, kpis = Result.inconclusive(f"the check's measurements are invalid: {describe(exc)}"), []
        return VerificationFinished(
            release_id=run.raw.release_id,
            step_id=run.raw.step_id,
            environment=run.raw.environment,
            verdict=result.verdict or Verdict.INCONCLUSIVE,
            reason=clip(result.reason),  # a check's reason of many KPIs' rules may be long: never a lost verdict
            kpis=kpis,
            window_start=run.window.start,
            window_end=end,
            verifier=self._name,
        )

    async def _close(self, run: Run, result: Result) -> None:
        """Mark the run finished and stage its verdict, in one transaction; retried while the database is away."""
        verdict = self._verdict(run, result, end=min(self._clock(), run.window.deadline))
        while True:
            try:
                if await self._publish(run, verdict):
                    log.info("verdict", verdict=verdict.verdict.value, reason=verdict.reason)
                    metrics.verdict(self._name, verdict.verdict.value)
                return
            except STORE_ERRORS as exc:
                log.warning("cannot store the verdict yet; retrying", error=describe(exc))
                await asyncio.sleep(STORE_RETRY_SECONDS)

    async def _publish(self, run: Run, verdict: VerificationFinished) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            claimed = await self._stage(conn, run, verdict)
        if claimed is False:
            log.info("run was replaced by a re-issued request or already closed; no verdict")
            return False
        self._published(claimed)
        return True

    async def _stage(
        self, conn: asyncpg.Connection, run: Run, verdict: VerificationFinished
    ) -> outbox.Claimed | None | Literal[False]:
        """Close the run and stage its verdict; False when the run was replaced or closed already."""
        body: dict[str, Any] = verdict.model_dump(mode="json")
        closed = await conn.execute(CLOSE, self._name, run.raw.release_id, run.raw.step_id, run.request_id, body)
        if closed != "UPDATE 1":
            return False
        return await outbox.add(
            conn,
            self._consumer,
            topics.results_for(self._consumer),
            Envelope.new(
                verdict, self._source, run.raw.release_id, tenant=run.tenant, trace=run.trace or telemetry.inject()
            ),
            claim=self._direct,
        )

    def _published(self, claimed: outbox.Claimed | None) -> None:
        if claimed is not None and self._direct is not None:
            self._direct.committed([claimed])
