"""Receives HAProxy's per-request log over UDP (raw format, one JSON object per line, deploy/haproxy/haproxy.cfg):

    {"backend":"shop_production_wave","server":"s2","status":201,"ta":14,"tenant":"acme","version":"v3"}

and hands parsed samples to a sink in small batches. HAProxy quotes and escapes every string, so no value can
shift another; this side still checks every field (the version is whatever the shop's X-Shop-Version header said,
i.e. candidate code) and refuses a line that is not exactly that object, counting it instead of guessing."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from contracts import names

Sample = tuple[str, str, str | None, int, int, str | None]
log = structlog.get_logger()

FIELDS = frozenset({"backend", "server", "status", "ta", "tenant", "version"})
MAX_LINE = 2048  # a request line is ~150 bytes; anything much longer is not one of HAProxy's
# `<service>_<environment>[_wave]` (the backends), or `fe_<environment>` for what HAProxy answers itself
# (maintenance 503s, refused requests): the environment is the name after the first `_`.
BACKEND = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}_([a-z0-9][a-z0-9.-]{0,62})(?:_wave)?")
SERVER = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}|<NOSRV>")
TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")  # HAProxy's tenant rule (storefront/tenancy.py)
VERSION = re.compile(names.NAME)  # a version as releases name it; anything else cannot be a release's
MAX_MS = 2**31 - 1  # http_samples.ta_ms is an integer column
NONE = "-"  # what HAProxy logs for a value it does not have


class MalformedLine(ValueError):
    """A line that claims to be a request line (a JSON object) but is not a valid one. `what` names the part that
    is wrong (bounded set: refusals are counted by it), the message says why."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")
        self.what = what


def parse(line: str) -> Sample | None:
    """(environment, server, version, status, Ta ms, tenant); None for lines that are not request lines at all
    (HAProxy's own notices, blank lines). Raises MalformedLine for a request line that cannot be trusted."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    if len(text) > MAX_LINE:
        raise MalformedLine("line", f"longer than {MAX_LINE} characters")
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedLine("line", f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(record, dict) or set(record) != FIELDS:
        keys = sorted(record)[:8] if isinstance(record, dict) else type(record).__name__
        raise MalformedLine("fields", f"not the request object's fields: {str(keys)[:120]}")
    backend = _text(record, "backend", BACKEND)
    environment = BACKEND.fullmatch(backend).group(1)
    return (
        environment,
        _text(record, "server", SERVER),
        _optional(record, "version", VERSION),
        _int(record, "status", 0, 999),
        _int(record, "ta", -1, MAX_MS),
        _optional(record, "tenant", TENANT),
    )


def _text(record: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = record[name]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise MalformedLine(name, f"{names.shown(value, 40)} is not a valid {name}")
    return value


def _optional(record: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str | None:
    return None if record[name] == NONE else _text(record, name, pattern)


def _int(record: dict[str, Any], name: str, low: int, high: int) -> int:
    value = record[name]
    if type(value) is not int or not low <= value <= high:
        raise MalformedLine(name, f"{names.shown(value, 40)} is not an integer in [{low}, {high}]")
    return value


class LineCounts:
    """What the receiver did with the lines since it started (and since the last report)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.refused: Counter[str] = Counter()  # by MalformedLine.what
        self.last_refusal = ""
        self._reported = 0

    def unreported(self) -> int:
        return sum(self.refused.values()) - self._reported

    def reported(self) -> None:
        self._reported = sum(self.refused.values())


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, batch: list[Sample], counts: LineCounts, arrived: asyncio.Event) -> None:
        self._batch, self._counts, self._arrived = batch, counts, arrived

    def datagram_received(self, data: bytes, addr: object) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            try:
                sample = parse(line)
            except MalformedLine as exc:
                self._counts.refused[exc.what] += 1
                self._counts.last_refusal = str(exc)
                continue
            if sample is not None:
                self._counts.accepted += 1
                self._batch.append(sample)
        self._arrived.set()


async def receive(
    address: str,
    sink: Callable[[list[Sample]], Awaitable[None]],
    flush_seconds: float = 0.25,
    counts: LineCounts | None = None,
) -> None:
    host, _, port = address.rpartition(":")
    counts = counts or LineCounts()
    batch: list[Sample] = []
    arrived = asyncio.Event()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Protocol(batch, counts, arrived), local_addr=(host, int(port))
    )
    log.info("receiving HAProxy request log", address=address)
    try:
        while True:
            await arrived.wait()
            await asyncio.sleep(flush_seconds)  # gather what arrives meanwhile into one insert
            arrived.clear()
            samples, batch[:] = batch[:], []
            if samples:
                await sink(samples)
            if counts.unreported():  # one warning per batch at most, whatever the rate of bad lines
                log.warning(
                    "HAProxy log lines refused",
                    new=counts.unreported(),
                    by_part=dict(counts.refused),
                    last=counts.last_refusal,
                    accepted=counts.accepted,
                )
                counts.reported()
    finally:
        transport.close()
