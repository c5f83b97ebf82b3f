"""CloudEvents 1.0 binary mode on Kafka: attributes in `ce_*` headers, the event data as the JSON value."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from contracts.events import EVENT_TYPES, Contract

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
TRACE_HEADERS = ("traceparent", "tracestate")


class ContractError(ValueError):
    """A record that does not satisfy the event contract; never retryable."""


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
    def new(cls, data: Contract, source: str, subject: str | None = None, tenant: str | None = None,
            trace: dict[str, str] | None = None) -> Envelope:
        return cls(data=data, id=str(uuid.uuid4()), source=source, type=data.event_type,
                   time=datetime.now(UTC), subject=subject, tenant=tenant, trace=dict(trace or {}))

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
    """Kafka headers (list of pairs or mapping, bytes or str) as a str→str dict."""
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    return {k: (v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v)) for k, v in items}


def decode(headers: Any, value: bytes | None) -> Envelope:
    """Validate a Kafka record against the contracts; raise ContractError with the reason otherwise."""
    h = header_dict(headers)
    if h.get("ce_specversion") != SPECVERSION:
        raise ContractError(f"missing or unsupported ce_specversion {h.get('ce_specversion')!r}; expected '1.0'")
    for attr in ("ce_id", "ce_source", "ce_type"):
        if not h.get(attr):
            raise ContractError(f"missing required CloudEvents attribute {attr}")
    model = EVENT_TYPES.get(h["ce_type"])
    if model is None:
        raise ContractError(f"unknown event type or schema version {h['ce_type']!r}")
    if value is None:
        raise ContractError("record has no value")
    try:
        payload = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"value is not valid JSON: {exc}") from None
    try:
        data = model.model_validate(payload)
    except ValidationError as exc:
        raise ContractError(f"{h['ce_type']} does not match its schema: {_summarise(exc)}") from None
    try:
        time = datetime.fromisoformat(h["ce_time"]) if h.get("ce_time") else datetime.now(UTC)
    except ValueError:
        raise ContractError(f"ce_time is not RFC 3339: {h['ce_time']!r}") from None
    return Envelope(data=data, id=h["ce_id"], source=h["ce_source"], type=h["ce_type"], time=time,
                    subject=h.get("ce_subject"), tenant=h.get("ce_tenant"),
                    trace={k: h[k] for k in TRACE_HEADERS if k in h})


def _summarise(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])


def to_json_dict(model: BaseModel) -> dict[str, Any]:
    return json.loads(model.model_dump_json())
