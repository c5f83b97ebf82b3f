"""Exports every placed order to the ERP exactly once, from however many storefront instances run.

Each order gets an `erp_exports` row in the transaction that places it. A worker claims one due row at a time
(`FOR UPDATE SKIP LOCKED`, so instances never claim the same row) by leasing it: its next attempt moves past the
time a send may take. The ERP is called outside any transaction, so a slow ERP holds no lock and no connection.
The row is marked exported only after the ERP answered 201 (accepted) or 200 (it already had it); any other answer
schedules a retry with backoff, and a 429 also pauses the tenant for its Retry-After. After a crash or a restart
mid-send the lease runs out and the order is sent again, which the ERP's idempotency on order_id absorbs.

Instances first export their own version's orders, and adopt other versions' pending orders once these are
`adopt_after_s` old: a broken release's exports fail (and show) while it runs, and still reach the ERP through
the stable version after it is rolled back. A version whose document the ERP refused (4xx) does not send that
order again, it would only be refused again: another version takes it over once it may adopt it. (An order every
running version had refused waits for a new release, or for `refused_by` to be cleared.)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import aiohttp
import asyncpg

from storefront import erp

log = logging.getLogger("storefront.exporter")

CLAIM = """
WITH claimed AS (
  UPDATE erp_exports SET next_attempt_at = now() + make_interval(secs => $4)
  WHERE order_id = (
    SELECT e.order_id FROM erp_exports e
    WHERE e.exported_at IS NULL AND e.next_attempt_at <= now()
      AND (e.version = $1 OR e.created_at < now() - make_interval(secs => $2))
      AND e.refused_by IS DISTINCT FROM $1
      AND NOT (e.tenant = ANY($3::text[]))
    ORDER BY e.next_attempt_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED)
  RETURNING order_id, attempts)
SELECT c.attempts, o.id, o.tenant, o.region, o.currency, o.amount_cents, o.tax_cents, o.lines, o.created_at
FROM claimed c JOIN orders o ON o.id = c.order_id
"""
# A send that outlived its lease may be accepted twice (the second time as a duplicate): the first acceptance stays.
MARK_EXPORTED = (
    "UPDATE erp_exports SET attempts = attempts + 1, exported_at = coalesce(exported_at, now()),"
    " exported_by = coalesce(exported_by, $2), last_error = NULL WHERE order_id = $1"
)
MARK_RETRY = (
    "UPDATE erp_exports SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2),"
    " last_error = $3, refused_by = coalesce($4, refused_by) WHERE order_id = $1"
)

BACKOFF_BASE_S, BACKOFF_MAX_S = 0.5, 30.0
IDLE_POLL_S = 0.5
LEASE_S = 30.0  # far longer than a send may take: the storefront's HTTP client gives up after 5 s


class Exporter:
    """The export workers of one storefront instance; `run()` until cancelled."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        session: aiohttp.ClientSession,
        *,
        erp_url: str,
        version: str,
        instance: str,
        adopt_after_s: float,
        workers: int = 2,
        rng: random.Random | None = None,
    ) -> None:
        self.pool, self.session, self.erp_url = pool, session, erp_url
        self.version, self.exporter = version, f"{version}/{instance}"
        self.adopt_after_s, self.workers = adopt_after_s, workers
        self.rng = rng or random.Random()
        self._paused: dict[str, float] = {}  # tenant → monotonic time until which the ERP throttles it

    async def run(self) -> None:
        await asyncio.gather(*(self._work() for _ in range(self.workers)))

    async def _work(self) -> None:
        while True:
            try:
                exported = await self.export_one()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("erp export: database unavailable (%s)", exc)
                exported = False
            except Exception:  # the exporter must outlive any surprise; the order stays pending
                log.exception("erp export failed")
                exported = False
            if not exported:
                await asyncio.sleep(IDLE_POLL_S)

    async def export_one(self) -> bool:
        """Claim one due order and send it; True if the ERP took it (so more may be waiting)."""
        now = time.monotonic()
        self._paused = {t: until for t, until in self._paused.items() if until > now}
        row = await self.pool.fetchrow(CLAIM, self.version, float(self.adopt_after_s), list(self._paused), LEASE_S)
        if row is None:
            return False
        try:
            document = erp.payload(row)
        except (KeyError, TypeError, ValueError) as exc:
            answer = erp.Answer(accepted=False, retryable=False, error=f"unexportable: {exc!r}")
        else:
            answer = await erp.send(self.session, self.erp_url, document, exporter=self.exporter)
        if answer.accepted:
            await self.pool.execute(MARK_EXPORTED, row["id"], self.exporter)
            return True
        refused_by = None
        if answer.retry_after_s is not None:
            self._paused[row["tenant"]] = time.monotonic() + answer.retry_after_s
            delay = answer.retry_after_s
        elif answer.retryable:
            delay = self.backoff(row["attempts"] + 1)
        else:
            # Paced like adoption, so two versions that are both refused do not hand the order back and forth.
            delay, refused_by = self.adopt_after_s, self.version
            log.warning("erp export of order %s refused: %s", row["id"], answer.error)
        await self.pool.execute(MARK_RETRY, row["id"], delay, answer.error, refused_by)
        return False

    def backoff(self, attempt: int) -> float:
        """Exponential, capped, with jitter so instances retrying the same outage spread out."""
        ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(attempt - 1, 16))
        return ceiling / 2 + self.rng.random() * ceiling / 2
