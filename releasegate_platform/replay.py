"""Data replay after a restore, as a plugin. The platform reads a service's business events since the backup point
from the topic (its source checked, with a deadline, after proving retention deleted none of them) and hands the
valid ones to the service's own replayer, which the catalog names (`dr.replayer: shop.replay:ShopReplayer`) and
which alone knows the service's tables. The platform knows nothing of orders.

It cannot be wedged: a record that is not a valid event of the service (undecodable, another source, refused by
the replayer) is skipped and listed with its partition, offset and reason; reading the topic has a deadline; and
before anything is restored, `check_replayable` proves the topic still holds every event since the backup point.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from contracts.cloudevents import ContractError, decode
from contracts.events import Contract
from contracts.names import shown
from releasegate_platform.catalog import JOURNEY_TARGET, ServiceEntry
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings

READ_SECONDS = 60.0
STOP_SECONDS = 10.0
# Entries of each list kept in the incident report; the totals count them all (the report must fit one record).
LISTED = 100


class ReplayError(Exception):
    """The business-event topic cannot be read completely; replaying part of it would lose data silently."""


class ReplayerRefused(ReplayError):
    """The catalog names no replayer, or one the platform may not load."""


class InvalidEvent(ValueError):
    """A record on the business-event topic that cannot be a replayable event of the service."""


@dataclass
class Bounded:
    """A list for the incident report: the first LISTED entries, and how many there were."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0

    def add(self, entry: dict[str, Any]) -> None:
        self.total += 1
        if len(self.entries) < LISTED:
            self.entries.append(entry)


@dataclass
class ReplayReport:
    """What a replay did: events it was given, those re-applied (their ids), those already in the restored
    database, and those it could not re-apply or that were invalid on the topic, with why."""

    seen: int = 0
    replayed: list[str] = field(default_factory=list)
    already_present: int = 0
    not_replayable: Bounded = field(default_factory=Bounded)
    invalid_events: Bounded = field(default_factory=Bounded)

    def as_evidence(self) -> dict[str, Any]:
        return {
            "events_to_replay": self.seen,
            "replayed": len(self.replayed),
            "already_present": self.already_present,
            "replayed_ids": self.replayed[:LISTED],
            "not_replayable": self.not_replayable.entries,
            "not_replayable_total": self.not_replayable.total,
            "invalid_events": self.invalid_events.entries,
            "invalid_events_total": self.invalid_events.total,
        }


@runtime_checkable
class Replayer(Protocol):
    """A service's replayer (the port). `select` picks the events to re-apply; `apply` re-applies them to the
    restored database, idempotently: an event already there is counted in `already_present`, never applied twice,
    and one that cannot be applied is listed in `not_replayable`, never raised."""

    def select(self, event: Contract, environment: str) -> Contract | None:
        """`event` if it is one to re-apply in `environment`; None for any other valid event of the service;
        InvalidEvent with the reason if it claims to be one and cannot be replayed."""
        ...

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Contract]) -> ReplayReport: ...


def load_replayer(entry: ServiceEntry) -> Replayer:
    """The replayer the catalog entry names, instantiated; ReplayerRefused unless it is a `module:Class` in the
    service's own package that implements the port."""
    target = entry.dr.replayer
    if target is None:
        raise ReplayerRefused(f"the catalog entry of {entry.name} names no dr.replayer: it has no data restore")
    package = entry.name.replace("-", "_")
    module_name, _, attr = target.partition(":")
    if JOURNEY_TARGET.fullmatch(target) is None or not (
        module_name == package or module_name.startswith(f"{package}.")
    ):
        raise ReplayerRefused(
            f"dr.replayer {shown(target)} of {entry.name} is not a `module:Class` in the service's own package "
            f"{package!r}; refused"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ReplayerRefused(f"dr.replayer {target} of {entry.name} cannot be loaded: {exc}") from None
    replayer = factory() if isinstance(factory, type) else None
    if not isinstance(replayer, Replayer):
        raise ReplayerRefused(f"dr.replayer {target} of {entry.name} is not a replayer class (select and apply)")
    return replayer


class Record(Protocol):
    partition: int
    offset: int
    headers: Any
    value: bytes | None


def classify(replayer: Replayer, service: str, headers: Any, value: bytes | None, environment: str) -> Contract | None:
    """The record's event if the replayer re-applies it in `environment` and it came from the service's own
    instances there; None for any other valid event; InvalidEvent with the reason otherwise. Never raises anything
    else, whatever the record holds."""
    try:
        envelope = decode(headers, value)
    except ContractError as exc:
        raise InvalidEvent(str(exc)) from None
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        raise InvalidEvent(f"cannot be decoded: {type(exc).__name__}") from None
    try:
        event = replayer.select(envelope.data, environment)
    except InvalidEvent:
        raise
    except Exception as exc:  # a replayer's bug must not stop the replay of the other events
        raise InvalidEvent(f"the replayer failed on it: {type(exc).__name__}: {str(exc)[:200]}") from None
    if event is None:
        return None
    if not envelope.source.startswith(f"{service}/{environment}/"):
        raise InvalidEvent(
            f"{envelope.type} from source {shown(envelope.source)}, not the {service}'s {environment} instances"
        )
    return event


@dataclass
class Scan:
    """The topic read from the backup point: the events to re-apply in topic order, the invalid records."""

    replayer: Replayer
    service: str
    environment: str
    topic: str
    events: list[Contract] = field(default_factory=list)
    invalid: Bounded = field(default_factory=Bounded)
    records: int = 0

    def take(self, record: Record) -> None:
        self.records += 1
        try:
            event = classify(self.replayer, self.service, record.headers, record.value, self.environment)
        except InvalidEvent as exc:
            self.invalid.add(
                {"topic": self.topic, "partition": record.partition, "offset": record.offset, "reason": str(exc)[:500]}
            )
            return
        if event is not None:
            self.events.append(event)


async def replay(replayer: Replayer, conn: asyncpg.Connection, scan: Scan) -> ReplayReport:
    """The replayer's report of re-applying the scan's events, with the scan's invalid records."""
    report = await replayer.apply(conn, scan.events)
    report.seen = len(scan.events)
    report.invalid_events = scan.invalid
    return report


def retention_gaps(begins: Mapping[int, int], ends: Mapping[int, int], found: Mapping[int, int | None]) -> list[str]:
    """Partitions that may have lost events since the backup point to retention, with why. Per partition:
    `begins`/`ends` its earliest and next offsets, `found` the first offset at or after the backup point (None if
    no retained event is that recent). Complete when nothing was ever deleted (earliest offset 0), or when an
    event older than the backup point is still retained (retention deletes the oldest first)."""
    gaps = []
    for p in sorted(ends):
        begin, first = begins[p], found.get(p)
        if begin == 0:
            continue
        if first is None and begin < ends[p]:
            continue  # every retained event is older than the backup point, so every deleted one is too
        if first is not None and first > begin:
            continue
        gaps.append(
            f"partition {p}: events up to offset {begin} were deleted by retention"
            + (
                " and none is retained"
                if first is None
                else f" and the earliest retained one (offset {begin}) is already after the backup point"
            )
        )
    return gaps


def _require_complete(
    topic: str, since: datetime, begins: Mapping[int, int], ends: Mapping[int, int], found: Mapping[int, int | None]
) -> None:
    gaps = retention_gaps(begins, ends, found)
    if gaps:
        raise ReplayError(f"{topic} no longer holds every event since {since.isoformat()}: " + "; ".join(gaps))


class _Topic:
    """The business-event topic, read as this process's principal (no consumer group, nothing committed)."""

    def __init__(self, settings: ServiceSettings, topic: str) -> None:
        # auto_offset_reset none: events deleted while they are read are an error, never silently skipped
        self._consumer = AIOKafkaConsumer(
            **client_options(settings),
            enable_auto_commit=False,
            auto_offset_reset="none",
            request_timeout_ms=int(READ_SECONDS * 1000) // 2,
        )
        self.topic = topic
        self.partitions: list[TopicPartition] = []

    async def __aenter__(self) -> _Topic:
        try:
            await self._consumer.start()
            # load the cluster metadata first: without it the topic's partitions are not known yet
            await self._consumer._client.force_metadata_update()
            known = self._consumer.partitions_for_topic(self.topic)
            if not known:
                raise ReplayError(f"topic {self.topic} has no partitions in the cluster metadata")
            self.partitions = [TopicPartition(self.topic, p) for p in sorted(known)]
            self._consumer.assign(self.partitions)
        except BaseException:  # also cancelled at the deadline: the client must not outlive the read
            await self._stop()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        try:
            await asyncio.wait_for(self._consumer.stop(), STOP_SECONDS)
        except TimeoutError:
            pass  # a broker gone away: the client is abandoned, the replay's outcome stands

    async def offsets(self, since: datetime) -> tuple[dict[int, int], dict[int, int], dict[int, int | None]]:
        c, ms = self._consumer, int(since.timestamp() * 1000)
        begins = await c.beginning_offsets(self.partitions)
        ends = await c.end_offsets(self.partitions)
        found = await c.offsets_for_times({tp: ms for tp in self.partitions})
        return (
            {tp.partition: o for tp, o in begins.items()},
            {tp.partition: o for tp, o in ends.items()},
            {tp.partition: (None if f is None else f.offset) for tp, f in found.items()},
        )

    async def scan(self, since: datetime, scan: Scan) -> Scan:
        begins, ends, found = await self.offsets(since)
        _require_complete(self.topic, since, begins, ends, found)
        pending = {}
        for tp in self.partitions:
            first = found[tp.partition]
            start = ends[tp.partition] if first is None else first
            if start < ends[tp.partition]:
                self._consumer.seek(tp, start)
                pending[tp] = ends[tp.partition]
        while pending:
            batches = await self._consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < pending.get(tp, 0):
                        scan.take(record)
            for tp in list(pending):
                # the position, not the last offset seen: control records and gaps have no record of their own
                if await self._consumer.position(tp) >= pending[tp]:
                    del pending[tp]
        return scan


async def _bounded(topic: str, what: str, coro: Any) -> Any:
    try:
        return await asyncio.wait_for(coro, READ_SECONDS)
    except TimeoutError:
        raise ReplayError(f"{what}: {topic} could not be read within {READ_SECONDS:g}s") from None
    except KafkaError as exc:
        raise ReplayError(f"{what}: {topic} cannot be read: {type(exc).__name__}: {exc}") from None


class EventLog:
    """The business-event topic of the services this process restores, read with every safeguard above."""

    def __init__(self, settings: ServiceSettings, topic: str) -> None:
        self._settings, self.topic = settings, topic

    async def check_replayable(self, since: datetime) -> dict[str, Any]:
        """Before a restore: ReplayError unless the topic still holds every event since `since` (read-only)."""

        async def check() -> dict[str, Any]:
            async with _Topic(self._settings, self.topic) as topic:
                begins, ends, found = await topic.offsets(since)
            _require_complete(self.topic, since, begins, ends, found)
            return {
                "partitions": len(ends),
                "events_since_backup_point": sum(ends[p] - f for p in ends if (f := found[p]) is not None),
            }

        checked: dict[str, Any] = await _bounded(
            self.topic, "checking that every event since the backup point is still there", check()
        )
        return checked

    async def events_since(self, replayer: Replayer, service: str, environment: str, since: datetime) -> Scan:
        """Every event the replayer re-applies in `environment` from `since` up to the end of the topic as it is
        now, and the invalid records among them."""

        async def read() -> Scan:
            async with _Topic(self._settings, self.topic) as topic:
                return await topic.scan(since, Scan(replayer, service, environment, self.topic))

        scan: Scan = await _bounded(self.topic, "reading the events since the backup point", read())
        return scan
