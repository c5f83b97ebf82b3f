"""Helpers of the consumer's unit tests: a dead-letter producer and a parking pool in memory, and records as the
broker would hand them over."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from aiokafka import ConsumerRecord

from contracts import topics
from contracts.cloudevents import Envelope, encode
from contracts.events import AlertRaised, DeadLetter, Severity


class FakeProducer:
    """Takes dead letters, or fails the way the broker would (`failure`), or never answers (`hang`)."""

    def __init__(self, failure: BaseException | None = None, hang: bool = False) -> None:
        self.sent: list[tuple[str, Envelope]] = []
        self.failure, self.hang = failure, hang

    async def send_envelope(self, topic: str, envelope: Envelope) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.failure is not None:
            raise self.failure
        # what the real producer would put on the wire must be encodable
        encode(envelope)
        self.sent.append((topic, envelope))

    def letters(self) -> list[DeadLetter]:
        return [e.data for t, e in self.sent if t == topics.DEADLETTER]


class FakePool:
    """parked_records with its primary key; `down` makes every connection attempt fail like a stopped server."""

    def __init__(self) -> None:
        self.parked: dict[tuple[str, str, int, int], tuple] = {}
        self.down = False

    @asynccontextmanager
    async def acquire(self, timeout: float | None = None):
        if self.down:
            raise ConnectionRefusedError("connection refused (PostgreSQL is down)")
        yield self

    async def fetchrow(self, sql: str, *args, timeout: float | None = None):
        assert sql.startswith("INSERT INTO parked_records")
        key = tuple(args[:4])
        if key in self.parked:
            return None
        self.parked[key] = args
        return {"?column?": 1}

    def parked_row(self, offset: int) -> dict:
        columns = (
            "consumer_group",
            "topic",
            "partition",
            "record_offset",
            "key",
            "reason",
            "error_type",
            "dead_letter_error",
            "headers",
            "value",
            "value_bytes",
            "value_digest",
            "header_count",
            "headers_bytes",
            "truncated",
        )
        (args,) = [a for k, a in self.parked.items() if k[3] == offset]
        return dict(zip(columns, args, strict=True))


def alert() -> Envelope:
    return Envelope.new(
        AlertRaised(release_id="r-1", service="shop", severity=Severity.INFO, title="t", detail="d"), "test", "r-1"
    )


def record(
    value: bytes | None, headers=(), key: bytes | None = b"r-1", offset: int = 7, topic: str = topics.ALERTS
) -> ConsumerRecord:
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=tuple(headers),
    )


def valid_record(offset: int = 7) -> ConsumerRecord:
    key, value, headers = encode(alert())
    return record(value, headers, key, offset)
