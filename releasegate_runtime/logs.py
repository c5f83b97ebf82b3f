"""structlog setup: JSON lines when not a TTY, secrets redacted before anything is written.

Log values may come from hostile records (headers, keys, exception messages quoting them), and redaction runs on
the event loop: it must cost time linear in a bounded input. Every string is cut to `STRING_LIMIT` characters
(the traceback to `EXCEPTION_LIMIT`) before it is scanned, nesting deeper than `DEPTH_LIMIT` is not walked, and
passwords in URLs are found by a single left-to-right scan with string methods, not a backtracking regex."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# alternatives of short literals: linear in the (bounded) key length
SECRET_KEYS = re.compile(r"(password|secret|token|api[_-]?key|authorization|private[_-]?key)", re.I)
REDACTED = "***"
STRING_LIMIT = 4096
EXCEPTION_LIMIT = 64 * 1024  # a traceback is worth more than any other value; still bounded
DEPTH_LIMIT = 16
SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")


def truncate(text: str, limit: int = STRING_LIMIT) -> str:
    """`text` cut to `limit` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} more characters]"


def redact(value: Any, _depth: int = 0) -> Any:
    """`value` with URL passwords and the values of secret-named keys replaced by ***, strings bounded."""
    if isinstance(value, str):
        return redact_url_passwords(truncate(value))
    if _depth >= DEPTH_LIMIT and isinstance(value, dict | list | tuple):
        return f"[nested deeper than {DEPTH_LIMIT} levels]"
    if isinstance(value, dict):
        return {_key(k): (REDACTED if SECRET_KEYS.search(_key(k)) else redact(v, _depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    return value


def _key(key: Any) -> str:
    return truncate(str(key), 256)


def redact_url_passwords(text: str) -> str:
    """Replace the password of every `scheme://user:password@` in `text` with ***.

    Same matches as the regex `[a-z][a-z0-9+.-]*://[^:/@\\s]+:[^@\\s]+@` (case-insensitive), found in time
    linear in `len(text)`: every failed attempt moves the cursor past the characters it examined, and the next
    '@' is searched for once per '@' (a password that meets whitespace or the end before an '@' rules out every
    later '://' of its token too)."""
    out: list[str] = []
    done = cursor = 0  # text[:done] is already in `out`; no match starts before `cursor`
    next_at = -2  # the first '@' at or after the last search start; -1: none left
    n = len(text)
    while (sep := text.find("://", cursor)) != -1:
        if not _has_scheme(text, sep, done):
            cursor = sep + 3
            continue
        user_end = sep + 3
        while user_end < n and text[user_end] not in ":/@" and not text[user_end].isspace():
            user_end += 1
        if user_end == sep + 3 or user_end == n or text[user_end] != ":":
            cursor = user_end if user_end > sep + 3 else sep + 3  # no ':' in between, so no '://' either
            continue
        start = user_end + 1
        if next_at != -1 and next_at < start:
            next_at = text.find("@", start)
        stop = n if next_at == -1 else next_at
        i = start
        while i < stop and not text[i].isspace():
            i += 1
        if i < stop or next_at == -1:  # whitespace or the end before any '@': this token has no match left
            cursor = i
            continue
        if next_at == start:  # empty password: not a match
            cursor = start
            continue
        out.append(text[done:start])
        out.append(REDACTED)
        done = cursor = next_at
    out.append(text[done:])
    return "".join(out)


def _has_scheme(text: str, sep: int, floor: int) -> bool:
    """Whether the run of scheme characters ending at `sep` (not reaching back before `floor`) contains a letter
    that can start a scheme. The scan stops at the first other character, at the latest the '/' of the previous
    '://', so all these scans together read each character once."""
    i, found = sep - 1, False
    while i >= floor and text[i] in SCHEME_CHARS:
        found = found or text[i].isalpha()
        i -= 1
    return found


def _redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    exception = event_dict.pop("exception", None)
    redacted: dict[str, Any] = redact(event_dict)
    if isinstance(exception, str):
        redacted["exception"] = redact_url_passwords(truncate(exception, EXCEPTION_LIMIT))
    return redacted


def configure(service: str, level: str = "INFO") -> structlog.stdlib.BoundLogger:
    renderer = structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    structlog.contextvars.bind_contextvars(service=service)
    return structlog.stdlib.get_logger()
