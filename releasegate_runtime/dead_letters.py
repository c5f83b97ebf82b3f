"""What a refused record becomes: a dead letter bounded so that it can always be produced (whatever the record's
size, headers or bytes), or, when the dead-letter topic will not take it either, a row in `parked_records`.

Everything kept from a hostile record is cut to a limit and has control characters and lone surrogates escaped:
it must fit in a Kafka record, in a PostgreSQL text column (no NUL) and in a log line. The original's sizes and
the sha256 of its value say what was cut and identify the record on its topic."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from contracts.events import DeadLetter
from contracts.names import MAX_HEADER_NAME, MAX_HEADERS, MAX_LABEL, MAX_REASON

# the DeadLetter contract's limits (contracts/names.py); 64 KiB of value are 87 KiB in base64, within its limit
VALUE_LIMIT = 64 * 1024
HEADER_COUNT_LIMIT = MAX_HEADERS
HEADER_NAME_LIMIT = MAX_HEADER_NAME
HEADER_VALUE_LIMIT = 512
KEY_LIMIT = MAX_LABEL
REASON_LIMIT = MAX_REASON
ERROR_TYPE_LIMIT = MAX_LABEL
PARK_TIMEOUT_SECONDS = 10.0

# C0 and C1 controls, DEL and lone surrogates, written as \xNN / \uNNNN (str.translate: one pass)
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_ESCAPES.update({c: f"\\u{c:04x}" for c in range(0xD800, 0xE000)})
# what keeps a UTF-8 value from being shown as text (tab, newline and carriage return are fine in JSON text)
_BINARY_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def printable(text: str, limit: int) -> tuple[str, bool]:
    """`text` with control characters escaped, at most `limit` characters (a cut says so); and whether it was
    changed."""
    escaped = text[:limit].translate(_ESCAPES)
    if len(text) <= limit and len(escaped) <= limit:
        return escaped, escaped != text
    marker = f"…[cut, {len(text)} characters]"
    return escaped[: max(limit - len(marker), 0)] + marker[:limit], True


def _size(item: Any) -> int:
    if item is None:
        return 0
    if isinstance(item, bytes | bytearray):
        return len(item)
    return len(str(item).encode("utf-8", "replace"))


def _as_text(item: Any) -> str:
    if item is None:
        return ""
    if isinstance(item, bytes | bytearray):
        return bytes(item).decode("utf-8", "replace")
    return str(item)


def value_text(value: bytes | None, limit: int = VALUE_LIMIT) -> tuple[str, bool]:
    """The first `limit` bytes of a record's value as text, or `base64:`… when they are not UTF-8 text (bytes,
    or control characters other than tab/newline); and whether it was cut."""
    if value is None:
        return "", False
    raw, cut = value[:limit], len(value) > limit
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # the cut may split the last character: that alone does not make the value binary
        text = (
            raw[: exc.start].decode("utf-8")
            if cut and exc.start >= len(raw) - 3 and exc.reason == "unexpected end of data"
            else None
        )
    if text is None or _BINARY_TEXT.search(text):
        return "base64:" + base64.b64encode(raw).decode("ascii"), cut
    return text, cut


@dataclass(frozen=True)
class BoundedRecord:
    """A refused record reduced to what may be kept of it, with the measures of the original."""

    consumer: str
    topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    error_type: str
    headers: dict[str, str]
    value: str
    value_bytes: int
    value_digest: str
    header_count: int
    headers_bytes: int
    truncated: bool

    def dead_letter(self) -> DeadLetter:
        return DeadLetter(
            consumer=self.consumer,
            source_topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            key=self.key,
            reason=self.reason,
            error_type=self.error_type,
            headers=self.headers,
            value=self.value,
            original_value_bytes=self.value_bytes,
            original_value_digest=self.value_digest,
            original_header_count=self.header_count,
            original_headers_bytes=self.headers_bytes,
            truncated=self.truncated,
        )


def bound(record: Any, consumer: str, reason: str, error_type: str) -> BoundedRecord:
    """`record`: an aiokafka ConsumerRecord (topic, partition, offset, key, value, headers)."""
    items = list(record.headers or ())
    headers: dict[str, str] = {}
    cut = len(items) > HEADER_COUNT_LIMIT
    for name, raw in items[:HEADER_COUNT_LIMIT]:
        name_text, name_cut = printable(_as_text(name), HEADER_NAME_LIMIT)
        value, value_cut = printable(_as_text(raw), HEADER_VALUE_LIMIT)
        headers[name_text] = value
        cut = cut or name_cut or value_cut
    key, key_cut = printable(_as_text(record.key), KEY_LIMIT) if record.key is not None else (None, False)
    reason_text, reason_cut = printable(reason, REASON_LIMIT)
    error_text, error_cut = printable(error_type, ERROR_TYPE_LIMIT)
    value, value_cut = value_text(record.value)
    return BoundedRecord(
        consumer=consumer,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        reason=reason_text,
        error_type=error_text,
        headers=headers,
        value=value,
        value_bytes=_size(record.value),
        value_digest="sha256:" + hashlib.sha256(record.value or b"").hexdigest(),
        header_count=len(items),
        headers_bytes=sum(_size(n) + _size(v) for n, v in items),
        truncated=cut or key_cut or reason_cut or error_cut or value_cut,
    )


def describe(failure: BaseException) -> str:
    """Why the dead letter could not be produced, bounded: the exception type and message."""
    return printable(f"{type(failure).__name__}: {failure}", REASON_LIMIT)[0]


async def park(pool: asyncpg.Pool, record: BoundedRecord, failure: BaseException) -> bool:
    """Keep the record in PostgreSQL so its consumer can move on; False if it was parked before (a redelivery).
    Raises when PostgreSQL does not take it either: then the record must be redelivered, never dropped."""
    async with pool.acquire(timeout=PARK_TIMEOUT_SECONDS) as conn:
        row = await conn.fetchrow(
            "INSERT INTO parked_records (consumer_group, topic, partition, record_offset, key, reason, error_type,"
            " dead_letter_error, headers, value, value_bytes, value_digest, header_count, headers_bytes, truncated)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)"
            " ON CONFLICT (consumer_group, topic, partition, record_offset) DO NOTHING RETURNING 1",
            record.consumer,
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.reason,
            record.error_type,
            describe(failure),
            record.headers,
            record.value,
            record.value_bytes,
            record.value_digest,
            record.header_count,
            record.headers_bytes,
            record.truncated,
            timeout=PARK_TIMEOUT_SECONDS,
        )
    return row is not None
