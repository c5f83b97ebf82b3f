"""Receives HAProxy's per-request log lines over UDP (raw format): `<backend> <server> <status> <Ta> <tenant>
<version>` and hands parsed samples to a sink in small batches."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

Sample = tuple[str, str, str | None, int, int, str | None]
log = structlog.get_logger()


def parse(line: str) -> Sample | None:
    """(environment, server, version, status, Ta ms, tenant), or None for lines that are not shop requests."""
    parts = line.strip().split()
    if len(parts) < 4 or "_" not in parts[0]:
        return None
    backend, server, status, ta = parts[:4]
    tenant = parts[4] if len(parts) > 4 and parts[4] != "-" else None
    version = parts[5] if len(parts) > 5 and parts[5] != "-" else None
    try:
        environment = backend.split("_", 1)[1].removesuffix("_wave")
        return environment, server, version, int(status), int(ta), tenant
    except ValueError:
        return None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[Sample]) -> None:
        self._queue = queue

    def datagram_received(self, data: bytes, addr: object) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            sample = parse(line)
            if sample is not None:
                self._queue.put_nowait(sample)


async def receive(address: str, sink: Callable[[list[Sample]], Awaitable[None]], flush_seconds: float = 0.25) -> None:
    host, _, port = address.rpartition(":")
    queue: asyncio.Queue[Sample] = asyncio.Queue()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Protocol(queue), local_addr=(host, int(port)))
    log.info("receiving HAProxy request log", address=address)
    try:
        while True:
            batch = [await queue.get()]
            await asyncio.sleep(flush_seconds)
            while not queue.empty():
                batch.append(queue.get_nowait())
            await sink(batch)
    finally:
        transport.close()
