"""Shapes of every name, id and digest that travels in an event, and the limits of free text and lists.

A name ends up in HAProxy runtime commands, connection URLs, file paths, log lines and SQL: one that is not a
plain lower-case word could split a command, point a URL elsewhere or escape a folder. So names are refused
unless they match, never cleaned up. Patterns are anchored with `^...$` for JSON Schema and pydantic; Python
callers use `check_name`, which matches the whole string (a trailing newline does not slip through `$`).
"""

from __future__ import annotations

import re
from functools import lru_cache

MAX_NAME = 63
# Services, environments, tenants, databases, principals, verifier, KPI and journey names, versions (`v2`).
NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
# A name, or `*` for all (what a verifier covers).
NAME_OR_ALL = r"^(\*|[a-z0-9][a-z0-9._-]{0,62})$"
# A tenant is named by the Host `<tenant>.shop.test` (HAProxy, the shop and the verifier share that rule):
# a DNS label, so no `.` or `_`, at most 32 characters.
TENANT = r"^[a-z0-9][a-z0-9-]{0,31}$"
MAX_TENANT = 32
MAX_RELEASE_ID = 100
# `<service>-<version>-<8 hex>` as the CLI makes them, e.g. `shop-v2-1a2b3c4d`; also the Kafka key.
RELEASE_ID = r"^[a-z0-9][a-z0-9._-]{0,99}$"
MAX_STEP_ID = 144
# Saga step ids (`verify-wave-<wave>`, `canary-25`) and compensation ids (`compensate:<environment>`).
STEP_ID = r"^[a-z0-9][a-z0-9._-]{0,79}(:[a-z0-9][a-z0-9._-]{0,62})?$"

SHA256_DIGEST = r"^sha256:[0-9a-f]{64}$"
# securesystemslib key ids are sha256 hex; a nonce is 128 to 256 random bits in hex.
KEY_ID = r"^[0-9a-f]{64}$"
NONCE = r"^[0-9a-f]{32,64}$"
# ed25519 signatures in hex (the only key type of the identities file and the coordinator).
SIGNATURE = r"^[0-9a-f]{128}$"
# A git commit: abbreviated or full, sha1 or sha256.
COMMIT = r"^[0-9a-f]{7,64}$"
CURRENCY = r"^[A-Z]{3}$"
# Opaque ids made by other systems: CloudEvents ids (UUIDs here), checkout and order ids, payment references.
OPAQUE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MAX_OPAQUE_ID = 128
# CloudEvents `source`, a URI reference: `releasegate/coordinator`, `shop/production/production-1-v2`.
EVENT_SOURCE = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}$"
MAX_EVENT_SOURCE = 255
# One line of printable text: no control character can end a log line or hide what follows.
LABEL = r"^[^\x00-\x1f\x7f]*$"

# Free text: an operator's reason, a check's explanation, a title, a KPI rule.
MAX_REASON = 4096
# Longer free text: a candidate's summary of its changes, a PromQL template, a source URL.
MAX_TEXT = 16384
# Short labels that are not names (a suite, a tool, a git ref, a rule, an e-mail address): one line, bounded.
MAX_LABEL = 256
MAX_URI = 2048
# Lists of names (tenants, services, KPIs, environments, approvals, warnings).
MAX_NAMES = 64
# Lists of records (findings, migrations, checks, instances, order lines).
MAX_ITEMS = 1000

# A Kafka record: its value is refused over this size before it is parsed (the largest real event, a gate request
# carrying a candidate's DSSE attestation, is a few KiB), its JSON nested at most this deep, its integers at most
# this many characters (int64 and a sign).
MAX_VALUE_BYTES = 512 * 1024
MAX_DEPTH = 32
MAX_INT_CHARS = 20
# Kafka headers: how many, how long a name and a value, how many bytes in all (a W3C tracestate is at most 512).
MAX_HEADERS = 32
MAX_HEADER_NAME = 64
MAX_HEADER_VALUE = 1024
MAX_HEADER_BYTES = 8192
# A dead letter describes a refused record in bounded fields, so it can always be produced: its value as text
# (64 KiB of the original, base64 when that is not UTF-8 text), its headers and key shortened to these.
MAX_DEADLETTER_VALUE = 96 * 1024
MAX_DEADLETTER_HEADERS = 64


@lru_cache(maxsize=32)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def shown(value: object, limit: int = 80) -> str:
    """A value as it may appear in an error message: repr, cut to `limit` characters so a hostile megabyte is
    never echoed into a log line or a dead letter."""
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{repr(value[:limit])[:limit]}… ({len(value)} {'characters' if isinstance(value, str) else 'bytes'})"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def clip(text: str, limit: int = MAX_REASON) -> str:
    """`text` shortened to `limit` characters, saying how long it was: for text a producer composes itself (a
    reason quoting other reasons), never for input, which is refused when too long."""
    if len(text) <= limit:
        return text
    tail = f"… ({len(text)} characters)"
    return text[: max(limit - len(tail), 0)] + tail


def matches(value: object, pattern: str = NAME) -> bool:
    """Whether `value` is a string matching `pattern` whole."""
    return isinstance(value, str) and _compiled(pattern).fullmatch(value) is not None


def check_name(kind: str, value: object, pattern: str = NAME) -> str:
    """`value` if it is a string matching `pattern` whole; ValueError naming `kind` otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"{kind} must be a string matching {pattern}, not {type(value).__name__}")
    if not matches(value, pattern):
        raise ValueError(
            f"{kind} {shown(value)} must match {pattern} (lower-case letters, digits, '.', '_', '-')"
            if pattern in (NAME, RELEASE_ID)
            else f"{kind} {shown(value)} must match {pattern}"
        )
    return value
