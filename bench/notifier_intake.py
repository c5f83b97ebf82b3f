"""Notifier intake benchmark on the local stack (`make bench-notifier`): how fast the real notifier process records
status events, with what one fetch brings recorded in one transaction (the default, RG_CONSUMER_BATCH=100) against
one transaction per event (RG_CONSUMER_BATCH=1), measured in the same run.

Each round publishes K status events on release.status as the coordinator (the only principal that may) while
the notifier is stopped, starts it, and waits until it recorded all of them (`processed_events`). The rate is K
over the time from the first event's record to the last one's, as PostgreSQL timestamped them, so the process's
start and its group join are left out. The events are of a service the catalog does not know (no route: nothing
is sent), so what is measured is the intake, which every status event goes through: at the rates of
`make bench-scale` (hundreds of status events a second), a notifier recording them one transaction each fell
behind. Before the rounds the notifier catches up with what the topic already held.

Exits 1 if a round does not record all its events within --timeout. Needs the stack (`make stack`) and none of
the regular services (`bash deploy/services.sh stop`).

    python -m bench.notifier_intake [--events 3000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import datetime

import asyncpg

from contracts import topics
from contracts.cloudevents import Envelope, encode
from contracts.events import ReleaseState, ReleaseStatusChanged
from releasegate_runtime import db
from releasegate_runtime.catch_up import CatchUpBarrier, KafkaOffsets
from releasegate_runtime.kafka import Producer, client_options
from releasegate_runtime.settings import ServiceSettings
from tests.support.services import Service, as_principal

SERVICE = "notifier-bench"  # not in the catalog: no route, nothing sent
GROUP = "releasegate-notifier"
ENV = {"RG_ENV": "local", "RG_HEALTH_PORT": "18790"}  # as deploy/services.sh starts it; /health on a port of its own
STATES = (ReleaseState.RUNNING, ReleaseState.RUNNING, ReleaseState.PROMOTED)


def events(k: int) -> list[Envelope]:
    """`k` status events of k/3 releases, each running, running and promoted (a release's events on one
    partition, in order)."""
    out = []
    for i in range(k):
        rid = f"{SERVICE}-{uuid.uuid4().hex[:10]}" if i % len(STATES) == 0 else out[-1].subject
        data = ReleaseStatusChanged(
            release_id=rid,
            service=SERVICE,
            version="v2",
            state=STATES[i % len(STATES)],
            step="deploy-canary-5",
            actor="coordinator",
            reason="notifier intake benchmark",
        )
        out.append(Envelope.new(data, "releasegate/coordinator", rid))
    return out


async def caught_up(settings: ServiceSettings, timeout: float) -> bool:
    return await CatchUpBarrier(
        KafkaOffsets(client_options(as_principal(settings, "admin"))), GROUP, [topics.STATUS], timeout=timeout
    ).wait()


async def recorded(pool: asyncpg.Pool, ids: list[str]) -> tuple[int, datetime | None, datetime | None]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, min(processed_at) AS first, max(processed_at) AS last FROM processed_events"
            " WHERE consumer = 'notifier' AND event_id = ANY($1::text[])",
            ids,
        )
    return row["n"], row["first"], row["last"]


async def one_round(
    settings: ServiceSettings, pool: asyncpg.Pool, producer: Producer, k: int, batch: int, timeout: float
) -> float:
    """Events recorded per second, with RG_CONSUMER_BATCH=`batch`."""
    sent = events(k)
    pending = [await producer.enqueue(topics.STATUS, *encode(e)) for e in sent]
    await asyncio.gather(*pending)
    notifier = Service("notifier", {**ENV, "RG_CONSUMER_BATCH": str(batch)}).start()
    ids = [e.id for e in sent]
    try:
        deadline = time.monotonic() + timeout
        while True:
            n, first, last = await recorded(pool, ids)
            if n == k:
                break
            if notifier.proc is not None and notifier.proc.poll() is not None:
                raise SystemExit(f"benchmark broken: the notifier exited (see {notifier.log})")
            if time.monotonic() > deadline:
                raise SystemExit(f"benchmark broken: {n} of {k} events recorded within {timeout:.0f} s")
            await asyncio.sleep(0.5)  # polling the ledger
    finally:
        notifier.stop()
    assert first is not None and last is not None
    return k / max((last - first).total_seconds(), 1e-3)


async def main(args: argparse.Namespace) -> int:
    settings = ServiceSettings()
    pool = await db.create_pool(settings.database_url, max_size=2)
    producer = Producer(as_principal(settings, "coordinator"), "bench-notifier")
    await producer.start()
    try:
        warm = Service("notifier", ENV).start()
        try:
            if not await caught_up(settings, args.timeout):
                raise SystemExit(f"benchmark broken: the notifier did not catch up with {topics.STATUS}")
        finally:
            warm.stop()
        rates: dict[int, list[float]] = {1: [], args.batch: []}
        for r in range(args.rounds):
            for batch in (1, args.batch):
                rate = await one_round(settings, pool, producer, args.events, batch, args.timeout)
                rates[batch].append(rate)
                print(f"... round {r + 1}, RG_CONSUMER_BATCH={batch}: {rate:.0f} events/s", flush=True)
    finally:
        await producer.stop()
        await pool.close()
    one, batched = statistics.median(rates[1]), statistics.median(rates[args.batch])
    print(f"\nNotifier intake, {args.events} status events a round, {args.rounds} round(s) each (median):")
    print(f"  one transaction per event (RG_CONSUMER_BATCH=1):    {one:8.0f} events/s")
    print(f"  a fetch per transaction (RG_CONSUMER_BATCH={args.batch}): {batched:8.0f} events/s")
    print(f"  ratio: {batched / one:.1f}x")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="status events a round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each configuration")
    parser.add_argument("--batch", type=int, default=100, help="RG_CONSUMER_BATCH of the batched rounds")
    parser.add_argument("--timeout", type=float, default=300, help="longest a round may take (s)")
    sys.exit(asyncio.run(main(parser.parse_args())))
