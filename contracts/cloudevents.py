"""CloudEvents 1.0 binary mode on Kafka: attributes in `ce_*` headers, the event data as the JSON value."""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from pydantic import BaseModel, ValidationError

from contracts.events import EVENT_TYPES, Contract
from contracts.names import (
    EVENT_SOURCE,
    MAX_DEPTH,
    MAX_HEADER_BYTES,
    MAX_HEADER_NAME,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_INT_CHARS,
    MAX_VALUE_BYTES,
    NAME,
    OPAQUE_ID,
    RELEASE_ID,
    clip,
    matches,
    shown,
)

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
TRACE_HEADERS = ("traceparent", "tracestate")


class ContractError(ValueError):
    """A record that does not satisfy the event contract; never retryable. Its reason is one short line: it names
    what is wrong and where, and never quotes more than a few dozen characters of the record."""

    def __init__(self, reason: str) -> None:
        super().__init__(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", clip(reason, MAX_REASON_CHARS)))


MAX_REASON_CHARS = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Header names as Kafka clients and CloudEvents use them (`ce_type`, `content-type`, `traceparent`).
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# What PostgreSQL and UTF-8 encoders refuse in text: NUL and lone surrogates (only JSON escapes can make them).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89abcdefABCDEF])")
INT64 = 2**63


@dataclass(frozen=True)
class Envelope:
    """One decoded event: its CloudEvents attributes and its validated data model."""

    data: Contract
    id: str
    source: str
    type: str
    time: datetime
    subject: str | None = None
    tenant: str | None = None
    trace: dict[str, str] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        data: Contract,
        source: str,
        subject: str | None = None,
        tenant: str | None = None,
        trace: dict[str, str] | None = None,
    ) -> Envelope:
        return cls(
            data=data,
            id=str(uuid.uuid4()),
            source=source,
            type=data.event_type,
            time=datetime.now(UTC),
            subject=subject,
            tenant=tenant,
            trace=dict(trace or {}),
        )

    def headers(self) -> dict[str, str]:
        h = {
            "ce_specversion": SPECVERSION,
            "ce_id": self.id,
            "ce_source": self.source,
            "ce_type": self.type,
            "ce_time": self.time.isoformat().replace("+00:00", "Z"),
            "content-type": CONTENT_TYPE,
        }
        if self.subject is not None:
            h["ce_subject"] = self.subject
        if self.tenant is not None:
            h["ce_tenant"] = self.tenant
        h.update({k: v for k, v in self.trace.items() if k in TRACE_HEADERS})
        return h


def encode(envelope: Envelope) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """Kafka key, value and headers for an envelope. The key is the subject (the release id)."""
    key = envelope.subject.encode() if envelope.subject else None
    value = envelope.data.model_dump_json().encode()
    return key, value, [(k, v.encode()) for k, v in envelope.headers().items()]


def header_dict(headers: Any) -> dict[str, str]:
    """Kafka headers (list of pairs or mapping, bytes or str) as a str→str dict, leniently (undecodable bytes
    replaced): for describing a record, never for trusting one (`decode` checks them)."""
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    return {k: (v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v)) for k, v in items}


def decode(headers: Any, value: bytes | None) -> Envelope:
    """Validate a Kafka record against the contracts; raise ContractError with the reason otherwise.

    Every failure is a ContractError, whatever the record holds: its size, headers and nesting are checked before
    it is parsed, and nothing in it can make parsing recurse, build a huge number or take more than linear time."""
    try:
        return _decode(headers, value)
    except ContractError:
        raise
    except Exception as exc:  # anything else a hostile record provokes is still the record's fault
        raise ContractError(f"record could not be decoded: {type(exc).__name__}: {shown(str(exc), 200)}") from None


def _decode(headers: Any, value: bytes | None) -> Envelope:
    h = _checked_headers(headers)
    if h.get("ce_specversion") != SPECVERSION:
        raise ContractError(f"missing or unsupported ce_specversion {shown(h.get('ce_specversion'))}; expected '1.0'")
    for attr in ("ce_id", "ce_source", "ce_type"):
        if not h.get(attr):
            raise ContractError(f"missing required CloudEvents attribute {attr}")
    model = EVENT_TYPES.get(h["ce_type"])
    if model is None:
        raise ContractError(f"unknown event type or schema version {shown(h['ce_type'])}")
    for attr, pattern in (
        ("ce_id", OPAQUE_ID),
        ("ce_source", EVENT_SOURCE),
        ("ce_subject", RELEASE_ID),
        ("ce_tenant", NAME),
    ):
        if attr in h and not matches(h[attr], pattern):
            raise ContractError(f"{attr} {shown(h[attr])} does not match {pattern}")
    try:
        time = datetime.fromisoformat(h["ce_time"]) if h.get("ce_time") else datetime.now(UTC)
    except ValueError:
        raise ContractError(f"ce_time is not RFC 3339: {shown(h['ce_time'])}") from None
    payload = _parse(value)
    try:
        data = model.model_validate(payload)
    except ValidationError as exc:
        raise ContractError(f"{h['ce_type']} does not match its schema: {_summarise(exc)}") from None
    return Envelope(
        data=data,
        id=h["ce_id"],
        source=h["ce_source"],
        type=h["ce_type"],
        time=time,
        subject=h.get("ce_subject"),
        tenant=h.get("ce_tenant"),
        trace={k: h[k] for k in TRACE_HEADERS if k in h},
    )


def _checked_headers(headers: Any) -> dict[str, str]:
    """Headers as text, refused when there are too many, one is too long or repeated, or one is not UTF-8 text
    without control characters: they reach log lines, dead letters and the database."""
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    checked: dict[str, str] = {}
    total = 0
    for count, (name, raw) in enumerate(items, start=1):
        if count > MAX_HEADERS:
            raise ContractError(f"more than {MAX_HEADERS} headers")
        name = _header_text(name, "a header name", MAX_HEADER_NAME)
        if not _HEADER_NAME.fullmatch(name):
            raise ContractError(f"header name {shown(name, 40)} is not a token of letters, digits, '.', '_', '-'")
        text = _header_text(b"" if raw is None else raw, f"header {name}", MAX_HEADER_VALUE)
        if _CONTROL.search(text):
            raise ContractError(f"header {name} contains a control character")
        if name in checked:
            raise ContractError(f"header {name} appears more than once")
        total += len(name) + len(text.encode())
        if total > MAX_HEADER_BYTES:
            raise ContractError(f"headers exceed {MAX_HEADER_BYTES} bytes in all (at {name})")
        checked[name] = text
    return checked


def _header_text(raw: Any, what: str, limit: int) -> str:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ContractError(f"{what} is a {type(raw).__name__}, not bytes")
    if len(raw) > limit:
        raise ContractError(f"{what} is {len(raw)} bytes long; at most {limit} are accepted")
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(f"{what} is not valid UTF-8 (byte {exc.start})") from None


def _parse(value: Any) -> Any:
    """The record's value as JSON, refused before parsing when too large, not UTF-8, or nested too deep; numbers
    beyond 64 bits or not finite, NUL characters and lone surrogates are refused naming the field."""
    if value is None:
        raise ContractError("record has no value")
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ContractError(f"value is a {type(value).__name__}, not bytes")
    if len(value) > MAX_VALUE_BYTES:
        raise ContractError(f"value is {len(value)} bytes; records over {MAX_VALUE_BYTES} bytes are refused unread")
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(f"value is not valid JSON text: not UTF-8 (byte {exc.start})") from None
    if "\x00" in text:
        raise ContractError(f"value contains a NUL byte (at {text.index(chr(0))})")
    _check_depth(text)
    numbers = _Numbers()
    try:
        payload = json.loads(text, parse_int=numbers.integer, parse_float=numbers.real, parse_constant=numbers.constant)
    except json.JSONDecodeError as exc:
        raise ContractError(f"value is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if numbers.refused or _UNSTORABLE_ESCAPE.search(text):
        _check_values(payload)
    return payload


def _check_depth(text: str) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH before it is parsed: a deeper document could exhaust the parser's
    recursion, and no event is anywhere near as deep. Linear, and in C: escapes and strings are cut out (a run of
    backslashes pairs up from its left, as in JSON), then the brackets left are summed."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    brackets = _NOT_BRACKET.sub("", "".join(unescaped.split('"')[0::2]))
    if max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > MAX_DEPTH:
        raise ContractError(f"value is nested more than {MAX_DEPTH} deep")


@dataclass(frozen=True)
class _Refused:
    """Stands in for a number the parser met but must not build; `_check_values` says where it was."""

    why: str


class _Numbers:
    """Number hooks of the JSON parser: integers within 64 bits, finite floats, no NaN or Infinity."""

    def __init__(self) -> None:
        self.refused = False

    def _refuse(self, why: str) -> _Refused:
        self.refused = True
        return _Refused(why)

    def integer(self, digits: str) -> int | _Refused:
        if len(digits) > MAX_INT_CHARS:
            return self._refuse(f"an integer of {len(digits)} digits")
        number = int(digits)
        return number if -INT64 <= number < INT64 else self._refuse("an integer beyond 64 bits")

    def real(self, digits: str) -> float | _Refused:
        if len(digits) > 4 * MAX_INT_CHARS:
            return self._refuse(f"a number of {len(digits)} characters")
        number = float(digits)
        return number if math.isfinite(number) else self._refuse("a number too large for a float")

    def constant(self, name: str) -> _Refused:
        return self._refuse(f"{name}, which JSON does not allow")


def _check_values(payload: Any) -> None:
    """Find the first refused number, NUL character or lone surrogate and name its field."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(payload, ())]
    while stack:
        node, path = stack.pop()
        entries = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, item in entries:
            if isinstance(key, str) and _UNSTORABLE.search(key):
                raise ContractError(f"field {_path(path)} has a key with a NUL character or a lone surrogate")
            if isinstance(item, _Refused):
                raise ContractError(f"field {_path((*path, key))}: {item.why}")
            if isinstance(item, str) and _UNSTORABLE.search(item):
                raise ContractError(f"field {_path((*path, key))} contains a NUL character or a lone surrogate")
            if isinstance(item, dict | list):
                stack.append((item, (*path, key)))
    if isinstance(payload, _Refused):
        raise ContractError(f"value is {payload.why}")


def _path(path: tuple[Any, ...]) -> str:
    return clip(".".join(map(str, path)) or "<root>", 120)


def _summarise(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    shown_errors = "; ".join(f"{_path(e['loc'])}: {clip(e['msg'], 200)}" for e in errors[:5])
    return shown_errors + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")


def to_json_dict(model: BaseModel) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(model.model_dump_json())
    return data
