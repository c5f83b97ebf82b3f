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
# CloudEvents ids are UUIDs here, but other producers may use any printable token.
EVENT_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MAX_EVENT_ID = 128

# Free text: an operator's reason, a check's explanation, a title, a KPI rule.
MAX_REASON = 4096
# Longer free text: a candidate's summary of its changes, a PromQL template, a source URL.
MAX_TEXT = 16384
# Short labels that are not names (a suite, a tool, a git ref, a currency): printable, bounded.
MAX_LABEL = 256
# Lists of names (tenants, services, KPIs, environments, approvals, warnings).
MAX_NAMES = 64
# Lists of records (findings, migrations, checks, instances, order lines).
MAX_ITEMS = 1000


@lru_cache(maxsize=32)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def shown(value: object, limit: int = 80) -> str:
    """A value as it may appear in an error message: repr, cut to `limit` characters so a hostile megabyte is
    never echoed into a log line or a dead letter."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def check_name(kind: str, value: object, pattern: str = NAME) -> str:
    """`value` if it is a string matching `pattern` whole; ValueError naming `kind` otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"{kind} must be a string matching {pattern}, not {type(value).__name__}")
    if _compiled(pattern).fullmatch(value) is None:
        raise ValueError(f"{kind} {shown(value)} must match {pattern} (lower-case letters, digits, '.', '_', '-')"
                         if pattern in (NAME, RELEASE_ID) else f"{kind} {shown(value)} must match {pattern}")
    return value
