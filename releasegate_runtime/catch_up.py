"""Catch-up barrier: after a restart, a service reads what was written while it was down before it acts on the
absence of news. The coordinator's deadlines wait behind it: a coordinator that was down longer than a step's
timeout must not fail a step whose result is already waiting on its topic.

The barrier takes the end offsets of the consumed topics once, at start, and waits until the service's consumer
group has committed up to them (a record is committed only after it was handled). The wait is bounded: a group
that cannot catch up (a broker outage, a record retried for ever) must not freeze deadlines for good."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

log = structlog.get_logger()
TIMEOUT_SECONDS = 120.0
POLL_SECONDS = 0.5


class OffsetsPort(Protocol):
    async def end_offsets(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        """The end offset of every partition of `topics` that holds records (end > beginning)."""

    async def committed(self, group: str, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offset of each partition; None where it has committed none."""

    async def close(self) -> None:
        """Release connections; the barrier calls it once it is done with the port."""


def behind(targets: dict[TopicPartition, int], committed: dict[TopicPartition, int | None]) -> dict[str, int]:
    """How many records each partition's committed offset is short of its target (`topic/partition` → count);
    empty when the group has caught up."""
    lag: dict[str, int] = {}
    for tp, end in targets.items():
        at = committed.get(tp)
        if at is None or at < end:
            lag[f"{tp.topic}/{tp.partition}"] = end - (at or 0)
    return lag


class CatchUpBarrier:
    """`wait()` returns once the group has caught up with what its topics held when the barrier first waited, or
    after `timeout` seconds (with a warning); afterwards it returns at once (a restarted loop does not wait
    again)."""

    def __init__(
        self,
        port: OffsetsPort,
        group: str,
        topics: Sequence[str],
        *,
        timeout: float = TIMEOUT_SECONDS,
        poll: float = POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._port, self._group, self._topics = port, group, tuple(topics)
        self._timeout, self._poll, self._clock, self._sleep = timeout, poll, clock, sleep
        self._passed = False
        self._targets: dict[TopicPartition, int] | None = None

    @property
    def passed(self) -> bool:
        return self._passed

    async def wait(self) -> bool:
        """True when the group caught up (or an earlier wait ended), False when this wait gave up."""
        if self._passed:
            return True
        try:
            return await self._wait()
        finally:
            self._passed = True
            await _quietly(self._port.close())

    async def _wait(self) -> bool:
        started = self._clock()
        lag: dict[str, int] | str = "not measured yet"
        while True:
            try:
                if self._targets is None:
                    self._targets = await self._port.end_offsets(self._topics)
                    log.info("waiting for the consumer to catch up", group=self._group, partitions=len(self._targets))
                lag = behind(self._targets, await self._port.committed(self._group, self._targets))
            except Exception as exc:  # the broker may be down at start: keep trying until the bound
                lag = f"offsets unreadable: {type(exc).__name__}: {exc}"
            if not lag:
                log.info("consumer caught up", group=self._group, waited_seconds=round(self._clock() - started, 1))
                return True
            if self._clock() - started >= self._timeout:
                log.warning(
                    "consumer has not caught up; going on without it",
                    group=self._group,
                    waited_seconds=self._timeout,
                    behind=lag,
                )
                return False
            await self._sleep(self._poll)


async def _quietly(cleanup: Awaitable[object]) -> None:
    try:
        await cleanup
    except Exception as exc:
        log.debug("closing the offsets port failed", error=repr(exc))


class KafkaOffsets:
    """OffsetsPort on the broker, with the service's own credentials (its principal may describe its topics
    and its group). One admin connection serves every poll."""

    def __init__(self, client_options: dict[str, Any]) -> None:
        self._options = client_options
        self._admin: AIOKafkaAdminClient | None = None

    async def end_offsets(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        consumer = AIOKafkaConsumer(**self._options, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
            if not partitions:
                return {}
            beginning = await consumer.beginning_offsets(partitions)
            end = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
        return {tp: end[tp] for tp in partitions if end[tp] > beginning[tp]}

    async def committed(self, group: str, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(**self._options)
            await admin.start()
            self._admin = admin
        try:
            offsets = await self._admin.list_consumer_group_offsets(group, partitions=list(partitions))
        except Exception:
            await self.close()  # the next poll connects anew (the broker may have restarted)
            raise
        return {tp: (meta.offset if meta.offset >= 0 else None) for tp, meta in offsets.items()}

    async def close(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.close()
