"""A hostile-record campaign against the live stack: produce the records through the real broker with the
credential of a principal allowed to write each topic, then account for every one of them: each reader of its
topic dead-lettered it with a reason (`release.deadletter`, matched by source topic, partition and offset) or
parked it (`parked_records`). Shared by the CI-sized test and `make bench-fuzz`."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from contracts import topics
from contracts.cloudevents import Envelope, encode
from releasegate_cli.client import load_candidate
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings
from tests.conftest import REPO, as_principal
from tests.e2e.conftest import CANDIDATES, status
from tests.support.fuzz.hostile import HostileRecord
from tests.support.fuzz.stack import WatchedStack
from tests.support.fuzz.targets import Reader, Target

Where = tuple[str, int, int]  # topic, partition, offset
CHUNK = 200


@dataclass(frozen=True)
class Sent:
    record: HostileRecord
    readers: tuple[Reader, ...]
    partition: int
    offset: int

    @property
    def where(self) -> Where:
        return self.record.topic, self.partition, self.offset


@dataclass
class Figures:
    """What a campaign found; `lines()` is what the test and the benchmark print."""

    sent: int = 0
    refused_by_broker: list[str] = field(default_factory=list)
    dead_lettered: int = 0
    parked: int = 0
    unaccounted: list[str] = field(default_factory=list)
    duplicates: int = 0
    by_primary: Counter = field(default_factory=Counter)
    unaccounted_by_primary: Counter = field(default_factory=Counter)
    crashes: dict[str, int] = field(default_factory=dict)
    unhealthy: dict[str, str] = field(default_factory=dict)
    services: int = 0
    valid: str = "not submitted"
    valid_ok: bool = False
    seconds_to_settle: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"records sent:                    {self.sent}"
            + (f" ({len(self.refused_by_broker)} more refused by the broker)" if self.refused_by_broker else ""),
            f"dead-lettered with a reason:     {self.dead_lettered}",
            f"parked (dead letter impossible): {self.parked}",
            f"neither (stalled or dropped):    {len(self.unaccounted)}",
            f"extra dead letters (redelivery): {self.duplicates}",
            f"crashes:                         {len(self.crashes)}" + (f" {self.crashes}" if self.crashes else ""),
            f"services healthy after:          {self.services - len(self.unhealthy)}/{self.services}"
            + (f" {self.unhealthy}" if self.unhealthy else ""),
            f"valid release after them:        {self.valid}",
            f"seconds until every record was refused: {self.seconds_to_settle:.0f}",
        ]
        if self.unaccounted:
            out.append(
                "not refused, by mutation: "
                + ", ".join(f"{k} {v}/{self.by_primary[k]}" for k, v in self.unaccounted_by_primary.most_common())
            )
            out += ["  " + u for u in self.unaccounted[:15]]
        out += [f"  {r}" for r in self.refused_by_broker[:5]]
        return out


class DeadLetterTail:
    """Reads `release.deadletter` (as `ops`) from where it ended when the campaign started."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._consumer = AIOKafkaConsumer(
            **client_options(as_principal(settings, "ops")),
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.refusals: dict[Where, list[tuple[str, str]]] = defaultdict(list)  # → [(consumer group, reason)]
        self.unreadable = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> DeadLetterTail:
        await self._consumer.start()
        await self._consumer._client.force_metadata_update()  # the topic's partitions are not known before
        partitions = self._consumer.partitions_for_topic(topics.DEADLETTER) or set()
        tps = [TopicPartition(topics.DEADLETTER, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # pin the start now: records dead-lettered from here on are the campaign's
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batches.values():
                for r in records:
                    try:
                        letter = json.loads(r.value)
                        where = (letter["source_topic"], int(letter["partition"]), int(letter["offset"]))
                        self.refusals[where].append((str(letter["consumer"]), str(letter.get("reason") or "")))
                    except (TypeError, ValueError, KeyError):
                        self.unreadable += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._consumer.stop()


async def parked_since(
    pool: asyncpg.Pool, since: datetime, topic_names: list[str]
) -> dict[Where, list[tuple[str, str]]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT consumer_group, topic, partition, record_offset, reason FROM parked_records"
            " WHERE parked_at >= $1 AND topic = ANY($2::text[])",
            since,
            topic_names,
        )
    out: dict[Where, list[tuple[str, str]]] = defaultdict(list)
    for r in rows:
        out[(r["topic"], r["partition"], r["record_offset"])].append((r["consumer_group"], r["reason"]))
    return out


class Campaign:
    def __init__(
        self, settings: ServiceSettings, pool: asyncpg.Pool, among: list[Target], records: list[HostileRecord]
    ) -> None:
        self.settings, self.pool, self.records = settings, pool, records
        self.targets = {t.topic: t for t in among}
        self.sent: list[Sent] = []
        self.figures = Figures(by_primary=Counter(r.primary for r in records))
        self.started_at = datetime.now(UTC)
        self.tail = DeadLetterTail(settings)
        self._parked: dict[Where, list[tuple[str, str]]] = {}

    async def send(self) -> None:
        """Every record through the broker, round-robin over its topic's partitions (so every partition of every
        topic carries hostile records), each as its topic's writer."""
        await self.tail.start()
        self.started_at = datetime.now(UTC)
        by_writer: dict[str, list[HostileRecord]] = defaultdict(list)
        for r in self.records:
            by_writer[r.writer].append(r)
        for writer, records in by_writer.items():
            producer = writer_producer(self.settings, writer)
            await producer.start()
            try:
                await self._send_all(producer, records)
            finally:
                await producer.stop()
        self.figures.sent = len(self.sent)

    async def _send_all(self, producer: AIOKafkaProducer, records: list[HostileRecord]) -> None:
        cycles = {t: itertools.cycle(sorted(await producer.partitions_for(t))) for t in {r.topic for r in records}}
        for start in range(0, len(records), CHUNK):
            chunk = records[start : start + CHUNK]
            pending = []
            for r in chunk:
                partition = next(cycles[r.topic])
                try:
                    pending.append(
                        (
                            r,
                            await producer.send(
                                r.topic, value=r.value, key=r.key, headers=list(r.headers), partition=partition
                            ),
                        )
                    )
                except KafkaError as exc:
                    self.figures.refused_by_broker.append(f"{r.topic} {r.mutation[:120]}: {exc!r}")
            for r, future in pending:
                try:
                    meta = await future
                except KafkaError as exc:
                    self.figures.refused_by_broker.append(f"{r.topic} {r.mutation[:120]}: {exc!r}")
                    continue
                self.sent.append(Sent(r, self.targets[r.topic].readers, meta.partition, meta.offset))

    def _refused_by(self, sent: Sent) -> tuple[bool, bool, list[str]]:
        """(all readers refused it, one of them parked it, the readers that did not)."""
        letters = self.tail.refusals.get(sent.where, [])
        parked = self._parked.get(sent.where, [])
        missing, any_parked = [], False
        for reader in sent.readers:
            if any(g in reader.groups and reason for g, reason in parked):
                any_parked = True
            elif not any(g in reader.groups and reason for g, reason in letters):
                missing.append(reader.name)
        return not missing, any_parked, missing

    async def settle(self, *, stall_seconds: float, limit_seconds: float) -> None:
        """Wait until every record is accounted for; give up when nothing new was refused for `stall_seconds`
        (a stalled consumer) or after `limit_seconds`. Then fill in the figures."""
        began = last_change = time.monotonic()
        done = -1
        while True:
            self._parked = await parked_since(self.pool, self.started_at, list(self.targets))
            now_done = sum(1 for s in self.sent if self._refused_by(s)[0])
            if now_done == len(self.sent):
                break
            if now_done != done:
                done, last_change = now_done, time.monotonic()
            if time.monotonic() - last_change > stall_seconds or time.monotonic() - began > limit_seconds:
                break
            await asyncio.sleep(1)
        self.figures.seconds_to_settle = time.monotonic() - began
        for s in self.sent:
            ok, parked, missing = self._refused_by(s)
            if not ok:
                self.figures.unaccounted.append(
                    f"{s.record.topic}[{s.partition}]@{s.offset} not refused by "
                    f"{', '.join(missing)}: {s.record.mutation[:240]}"
                )
                self.figures.unaccounted_by_primary[s.record.primary] += 1
            elif parked:
                self.figures.parked += 1
            else:
                self.figures.dead_lettered += 1
            letters = self.tail.refusals.get(s.where, [])
            self.figures.duplicates += max(0, len(letters) - len(s.readers))


def writer_producer(settings: ServiceSettings, principal: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_options(as_principal(settings, principal)),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=1_048_576,
    )


async def submit_valid_release(settings: ServiceSettings, version: str = "v2") -> tuple[str, int, int]:
    """A valid candidate, produced like `releasegate submit` does (as `ci`, keyed by its release id) after the
    campaign's records; its id, partition and offset (to show hostile records came before it there)."""
    candidate = load_candidate(CANDIDATES / f"shop-{version}.json", submitted_by="ci")
    key, value, headers = encode(Envelope.new(candidate, "releasegate/cli", candidate.release_id))
    producer = writer_producer(settings, "ci")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topics.CANDIDATES, value=value, key=key, headers=headers)
    finally:
        await producer.stop()
    return candidate.release_id, meta.partition, meta.offset


def hostile_before(campaign: Campaign, topic: str, partition: int, offset: int) -> int:
    return sum(1 for s in campaign.sent if s.record.topic == topic and s.partition == partition and s.offset < offset)


async def watch(release_id: str, timeout: float) -> int:
    """`releasegate watch` until the release ends: 0 promoted, 1 ended otherwise; killed if the caller gives up."""
    proc = await asyncio.create_subprocess_exec(
        "releasegate",
        "watch",
        release_id,
        "--timeout",
        str(timeout),
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        return await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def run(
    settings: ServiceSettings,
    pool: asyncpg.Pool,
    stack: WatchedStack,
    among: list[Target],
    records: list[HostileRecord],
    *,
    stall_seconds: float,
    limit_seconds: float,
    release_timeout: float = 420,
) -> Figures:
    """The whole campaign: hostile records; once they are accounted for, a valid release (v2) behind them on
    the topics it travels (submitted after the refusals so that their load does not weigh on its KPIs), watched
    to its end; then which processes crashed and which are unhealthy."""
    campaign = Campaign(settings, pool, among, records)
    try:
        await campaign.send()
        await campaign.settle(stall_seconds=stall_seconds, limit_seconds=limit_seconds)
    finally:
        await campaign.tail.stop()
    rid, partition, offset = await submit_valid_release(settings)
    watched = await watch(rid, release_timeout)
    f = campaign.figures
    f.crashes, f.unhealthy, f.services = stack.crashed(), await stack.unhealthy(), len(stack.ports)
    state = status(rid).get("state") if watched in (0, 1) else f"not ended ({watched})"
    before = hostile_before(campaign, topics.CANDIDATES, partition, offset)
    f.valid_ok = state == "promoted"
    f.valid = f"{rid} {state}, after {before} hostile records on {topics.CANDIDATES}[{partition}]"
    if not f.valid_ok:
        f.valid += f" ({last_reason(rid)})"
    return f


def last_reason(release_id: str) -> str:
    timeline = status(release_id).get("timeline") or [{}]
    return str(timeline[-1].get("reason", ""))[:300]
