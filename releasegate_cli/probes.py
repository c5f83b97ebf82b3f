"""Outside-in checks used by the demo, tests and benchmarks: which version really answers through HAProxy,
and what arrives on a topic."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.cloudevents import Envelope, decode
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings

TENANT_HOST_SUFFIX = ".shop.test"  # a client names its tenant by the Host only (shop/bundle_src/storefront/tenancy.py)


def tenant_host(tenant: str, base_url: str) -> str:
    """The Host header naming `tenant`, keeping the port of `base_url` (HAProxy and the shop accept either)."""
    port = httpx.URL(base_url).port
    return f"{tenant}{TENANT_HOST_SUFFIX}" + (f":{port}" if port else "")


async def versions_served(
    base_url: str, requests: int = 50, *, tenant: str | None = None, canary_cookie: str | None = None
) -> Counter[str]:
    """Count the X-Shop-Version of `requests` real requests through the given frontend: as `tenant` (by its Host) if
    given, else as no tenant; carrying the canary cookie value `canary_cookie` (`<user>.<mac>`, `releasegate
    canary-cookie`) if given."""
    seen: Counter[str] = Counter()
    headers = {"Host": tenant_host(tenant, base_url)} if tenant else {}
    cookies = {"rg_canary": canary_cookie} if canary_cookie else None
    async with httpx.AsyncClient(timeout=5, cookies=cookies) as client:
        for _ in range(requests):
            try:
                r = await client.get(f"{base_url}/products", headers=headers)
                seen[r.headers.get("X-Shop-Version", f"http-{r.status_code}")] += 1
            except httpx.HTTPError as exc:
                seen[type(exc).__name__] += 1
    return seen


class TopicTail:
    """Reads topics from the moment `start` returns (no group, no commits), decoding CloudEvents."""

    def __init__(self, settings: ServiceSettings, *topics: str) -> None:
        self._consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
        self._topics = topics
        self.seen: list[Envelope] = []

    async def start(self) -> TopicTail:
        await self._consumer.start()
        await self._consumer._client.force_metadata_update()
        partitions = [TopicPartition(t, p) for t in self._topics for p in self._consumer.partitions_for_topic(t) or {0}]
        if not partitions:  # nothing to read: a tail of no topic
            return self
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the end offsets now, so nothing published after start() is missed
            await self._consumer.position(tp)
        return self

    async def wait_for(self, predicate: Callable[[Envelope], bool], timeout: float) -> Envelope | None:
        for env in self.seen:
            if predicate(env):
                return env
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            batches = await self._consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for records in batches.values():
                for record in records:
                    try:
                        env = decode(record.headers, record.value)
                    except ValueError:
                        continue
                    self.seen.append(env)
                    if predicate(env):
                        return env
        return None

    async def collect(self) -> list[Envelope]:
        """Everything published from `start` up to the end of the topics as they are now."""
        partitions = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(partitions)
        while [tp for tp in partitions if await self._consumer.position(tp) < ends[tp]]:
            batches = await self._consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    try:
                        self.seen.append(decode(record.headers, record.value))
                    except ValueError:
                        continue
        return self.seen

    async def stop(self) -> None:
        await self._consumer.stop()
