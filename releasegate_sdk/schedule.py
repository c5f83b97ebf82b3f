"""When a check runs and what its answer means for the window: the SDK's timing rules, without I/O.

A window opens when the verifier receives the request and lasts `window_seconds`. The verdict is due by the
deadline: the window's end plus the shorter of `grace_seconds` and the window's length (a window may run to
twice its length, and the coordinator waits window + the catalog's grace). Without `looks_every` the check
runs at the window's end; with it, also every `looks_every` seconds before, where a decisive answer ends the
window early. A pending answer, or a retryable error, means: look again, until the deadline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from releasegate_sdk.types import Result, describe

PENDING_LOOK_SECONDS = 1.0
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    deadline: datetime

    @classmethod
    def of(cls, start: datetime, window_seconds: float, grace_seconds: float) -> Window:
        end = start + timedelta(seconds=window_seconds)
        return cls(start, end, end + timedelta(seconds=min(window_seconds, grace_seconds)))


@dataclass(frozen=True)
class Finish:
    """Publish this result as the verdict."""

    result: Result


@dataclass(frozen=True)
class LookAgain:
    at: datetime


def first_look(window: Window, looks_every: float | None) -> datetime:
    return window.start + timedelta(seconds=looks_every) if looks_every else window.end


def _next_look(window: Window, now: datetime, looks_every: float | None) -> datetime:
    if now < window.end:
        return min(now + timedelta(seconds=looks_every), window.end) if looks_every else window.end
    return min(now + timedelta(seconds=looks_every or PENDING_LOOK_SECONDS), window.deadline)


def after_answer(
    window: Window, result: Result, *, final: bool, now: datetime, looks_every: float | None
) -> Finish | LookAgain:
    """`final`: the look was at or after the window's end; `now`: when the check returned."""
    if result.decisive or (final and result.verdict is not None):
        return Finish(result)
    if now >= window.deadline:
        return Finish(Result.inconclusive(result.reason, result.measurements))
    return LookAgain(_next_look(window, now, looks_every))


def backoff_seconds(attempt: int) -> float:
    return min(RETRY_FIRST_SECONDS * 2 ** (attempt - 1), RETRY_MAX_SECONDS)


def after_error(
    window: Window, error: BaseException, *, attempt: int, retryable: bool, now: datetime
) -> Finish | LookAgain:
    """A check that raised: retry a retryable error until the deadline; anything else is a bug or bad input that
    a retry will not fix, so the verdict is inconclusive at once (never a pass)."""
    if not retryable:
        return Finish(Result.inconclusive(f"the check failed: {describe(error)}"))
    if now >= window.deadline:
        return Finish(Result.inconclusive(f"gave up after {attempt} attempts: {describe(error)}"))
    return LookAgain(min(now + timedelta(seconds=backoff_seconds(attempt)), window.deadline))
