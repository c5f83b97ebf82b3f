"""The release calendar: freeze windows and business hours that decide when a production release may run.

Pure code over a `now` the caller passes, so a decision can be replayed, and tested, on any date.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from services.gatekeeper.domain import GateError

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Windows can chain (a freeze ends as the next begins, or ends after business hours close); retry_at follows the
# chain this many times. A longer chain gives only the earliest possible time, and the gate simply asks again then.
MAX_HOPS = 64


class CalendarError(GateError):
    """The calendar file cannot be read or is malformed; never retryable, someone has to fix the file."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Zoned(_Model):
    timezone: str = Field(description="IANA time zone whose wall clock the entry's times are read on")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Europe/Berlin, America/New_York)") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class _Window:
    """One freeze (explicit or recurring) that is active at the instant asked about."""

    name: str
    zone: ZoneInfo
    ends_at: datetime
    blocks: tuple[str, ...]


class Freeze(_Zoned):
    """An explicit interval, e.g. a peak trading event, during which changes to some domains wait."""

    name: str = Field(min_length=1)
    start: datetime = Field(description="Wall-clock start in `timezone`, inclusive, e.g. 2026-11-26T00:00")
    end: datetime = Field(description="Wall-clock end in `timezone`, exclusive")
    blocks: list[str] = Field(min_length=1, description="Domains whose changes wait, e.g. checkout, payment")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _wall_clock(cls, value: object) -> datetime:
        # PyYAML turns 2026-11-26T00:00:00 into a datetime itself but leaves 2026-11-26T00:00 a string.
        if isinstance(value, str):
            with suppress(ValueError):
                value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            raise ValueError(f"{value!r} is not a date and time like 2026-11-26T00:00")
        if value.tzinfo is not None:
            raise ValueError("write the wall-clock time without an offset; `timezone` says where it is read")
        return value

    @model_validator(mode="after")
    def _real_interval(self) -> Freeze:
        for what, wall in (("start", self.start), ("end", self.end)):
            # Otherwise the instant would silently depend on which side of a clock change zoneinfo picks.
            first, second = wall.replace(tzinfo=self.zone, fold=0), wall.replace(tzinfo=self.zone, fold=1)
            if first.utcoffset() != second.utcoffset():
                raise ValueError(
                    f"{what} {wall:%Y-%m-%dT%H:%M} is skipped or repeated in {self.timezone} "
                    "when the clocks change; pick another time"
                )
        if self.end_at <= self.start_at:
            raise ValueError(f"end {self.end:%Y-%m-%dT%H:%M} is not after start {self.start:%Y-%m-%dT%H:%M}")
        return self

    @property
    def start_at(self) -> datetime:
        return self.start.replace(tzinfo=self.zone).astimezone(UTC)

    @property
    def end_at(self) -> datetime:
        return self.end.replace(tzinfo=self.zone).astimezone(UTC)

    def window_at(self, now: datetime) -> _Window | None:
        if not self.start_at <= now < self.end_at:
            return None
        return _Window(self.name, self.zone, self.end_at, tuple(self.blocks))


class Recurring(_Zoned):
    """A window that opens on a cron schedule and stays open for some hours, e.g. the month-end close."""

    name: str = Field(min_length=1)
    cron: str = Field(description="Five-field cron expression read on the `timezone` wall clock, e.g. '0 18 L * *'")
    duration_hours: float = Field(gt=0, description="Elapsed hours the window stays open after each fire")
    blocks: list[str] = Field(min_length=1, description="Domains whose changes wait, e.g. erp-sync")

    @field_validator("cron")
    @classmethod
    def _five_field_cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a five-field cron expression (minute hour day-of-month month weekday)")
        try:
            croniter(value, EPOCH).get_next(datetime)
        except CroniterBadDateError:
            raise ValueError(f"{value!r} never fires (a day no month has, like 30 February)") from None
        return value

    def window_at(self, now: datetime) -> _Window | None:
        # croniter on an aware time is DST-correct: a skipped wall time fires when the clocks jump, a repeated one
        # fires on both passes (a little more frozen, never less). get_prev is strict, hence the microsecond:
        # a window that opens exactly now is open.
        fired = croniter(self.cron, (now + timedelta(microseconds=1)).astimezone(self.zone)).get_prev(datetime)
        ends_at = fired.astimezone(UTC) + timedelta(hours=self.duration_hours)
        if now >= ends_at:
            return None
        return _Window(self.name, self.zone, ends_at, tuple(self.blocks))


class BusinessHours(_Zoned):
    """When production releases of some tiers may run, e.g. tier 1 Mon–Thu 09:00–16:00 Berlin time."""

    tiers: list[int] = Field(min_length=1, description="Service tiers (catalog `tier`) the rule applies to")
    days: list[Day] = Field(min_length=1)
    start: time = Field(description='Opening on the `timezone` wall clock, inclusive, quoted: "09:00"')
    end: time = Field(description='Closing on the same day, exclusive, quoted: "16:00"')

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock_time(cls, value: object) -> time:
        if isinstance(value, int):
            raise ValueError(
                f'quote the time, e.g. "16:00": unquoted, YAML reads HH:MM as a base-60 number (got {value})'
            )
        if not isinstance(value, str) or not re.fullmatch(r"\d\d:\d\d", value):
            raise ValueError(f'{value!r} is not a time like "09:00"')
        return time.fromisoformat(value)

    @model_validator(mode="after")
    def _closes_after_opening(self) -> BusinessHours:
        if self.end <= self.start:
            raise ValueError(
                f"end {self.end:%H:%M} is not after start {self.start:%H:%M} "
                "(hours cannot run past midnight; use one rule per day part)"
            )
        return self

    def is_open(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        return DAYS[local.weekday()] in self.days and self.start <= local.time() < self.end

    def next_open(self, now: datetime) -> datetime:
        """The first opening after `now`, in UTC; at most a week ahead, since `days` is never empty."""
        today = now.astimezone(self.zone).date()
        # combine() per day reads the opening on that day's own offset, so a DST switch in between is respected.
        openings = (datetime.combine(today + timedelta(days=n), self.start, tzinfo=self.zone) for n in range(8))
        return next(o for o in openings if DAYS[o.weekday()] in self.days and o.astimezone(UTC) > now).astimezone(UTC)

    def describe(self) -> str:
        return f"{_day_ranges(self.days)} {self.start:%H:%M}–{self.end:%H:%M} {self.timezone}"


@dataclass(frozen=True)
class Timing:
    """When one production release may run, judged at one instant; every datetime is UTC."""

    frozen: bool
    freeze_name: str | None
    freeze_ends_at: datetime | None
    frozen_domains: tuple[str, ...]
    inside_business_hours: bool
    next_business_open: datetime | None
    retry_at: datetime | None
    reasons: tuple[str, ...]
    # The business-hours sentence of `reasons` on its own: timing.rego waits with it as the message.
    business_hours_reason: str | None = None

    def as_input(self, now: datetime) -> dict[str, Any]:
        """The `timing` part of the gate policy input, with times as epoch seconds only: the Rego engine
        mishandles RFC 3339 strings ending in Z. Whole seconds keep `<` exact against whole-second boundaries."""
        _require_aware(now)
        return {
            "frozen": self.frozen,
            "freeze_name": self.freeze_name,
            "freeze_ends_at_epoch": _epoch(self.freeze_ends_at),
            "frozen_domains": list(self.frozen_domains),
            "inside_business_hours": self.inside_business_hours,
            "business_hours_reason": self.business_hours_reason,
            "next_business_open_epoch": _epoch(self.next_business_open),
            "retry_at_epoch": _epoch(self.retry_at),
            "now_epoch": _epoch(now),
        }


class Calendar(_Model):
    """A versioned release calendar; `digest` names the exact content it was read from, for decisions to cite."""

    version: int = Field(ge=0, description="Revision of this calendar, bumped on every edit")
    freezes: list[Freeze] = Field(default=[], description="Explicit intervals, e.g. peak trading events")
    recurring: list[Recurring] = Field(default=[], description="Cron-scheduled windows, e.g. month-end close")
    business_hours: list[BusinessHours] = Field(default=[], description="Per tier; tiers not listed run any time")
    _digest: str = PrivateAttr()

    @model_validator(mode="after")
    def _unique_names(self) -> Calendar:
        names = [entry.name for entry in [*self.freezes, *self.recurring]]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"freeze names must be unique, since reasons cite them: {', '.join(repeated)}")
        return self

    @property
    def digest(self) -> str:
        return self._digest

    @classmethod
    def load(cls, path: Path | str) -> Calendar:
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise CalendarError(f"cannot read the release calendar {path}: {exc.strerror}") from None
        return cls.from_yaml(content, source=str(path))

    @classmethod
    def from_yaml(cls, content: bytes | str, *, source: str = "release calendar") -> Calendar:
        raw = content.encode() if isinstance(content, str) else content
        try:
            calendar = cls.model_validate(yaml.safe_load(raw))
        except yaml.YAMLError as exc:
            raise CalendarError(f"{source} is not valid YAML: {exc}") from None
        except ValidationError as exc:
            raise CalendarError(f"{source} is invalid: {_problems(exc)}") from None
        calendar._digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        return calendar

    @classmethod
    def empty(cls) -> Calendar:
        """No freezes and no business hours: every release may run at any time."""
        return cls.from_yaml("version: 0\n", source="empty calendar")

    def timing(self, now: datetime, *, tier: int, domains: Sequence[str]) -> Timing:
        """Judge a production release of a service of `tier` whose change touches `domains`, at `now`."""
        _require_aware(now)
        # All comparisons happen in UTC: aware datetimes sharing a tzinfo compare by wall clock, ignoring DST folds.
        now = now.astimezone(UTC)
        domains = list(dict.fromkeys(domains))
        windows = sorted(self._windows_at(now, domains), key=lambda w: w.ends_at)
        latest = windows[-1] if windows else None
        rules = [rule for rule in self.business_hours if tier in rule.tiers]
        next_open = _next_opening(rules, now)
        reasons = [
            f"{_and([d for d in domains if d in w.blocks])} changes are frozen by {w.name} "
            f"until {_local(w.ends_at, w.zone)}"
            for w in windows
        ]
        hours_reason = None
        if next_open is not None:
            opening_zone = min(rules, key=lambda rule: rule.next_open(now)).zone
            hours_reason = (
                f"tier {tier} releases to production run {' or '.join(r.describe() for r in rules)}; "
                f"next window opens {_local(next_open, opening_zone, weekday=True)}"
            )
            reasons.append(hours_reason)
        retry_at = self._earliest_release(now, domains, rules)
        if retry_at is not None and retry_at not in (next_open, latest.ends_at if latest else None):
            # Only when windows chain does retry_at differ from both sentences above; say it then.
            zone = rules[0].zone if rules else windows[-1].zone
            reasons.append(
                f"all windows taken together, the release can run from {_local(retry_at, zone, weekday=True)}"
            )
        return Timing(
            frozen=latest is not None,
            freeze_name=latest.name if latest else None,
            freeze_ends_at=latest.ends_at if latest else None,
            frozen_domains=tuple(d for d in domains if d in latest.blocks) if latest else (),
            inside_business_hours=next_open is None,
            next_business_open=next_open,
            retry_at=retry_at,
            reasons=tuple(reasons),
            business_hours_reason=hours_reason,
        )

    def _windows_at(self, now: datetime, domains: list[str]) -> list[_Window]:
        """Freezes active at `now` that block at least one of `domains`, in calendar order."""
        windows = (entry.window_at(now) for entry in [*self.freezes, *self.recurring])
        return [w for w in windows if w is not None and any(d in w.blocks for d in domains)]

    def _earliest_release(self, now: datetime, domains: list[str], rules: list[BusinessHours]) -> datetime | None:
        """The first instant from `now` on that no freeze blocks and business hours allow; None if that is now."""
        at = now
        for _ in range(MAX_HOPS):
            windows = self._windows_at(at, domains)
            if windows:
                at = max(w.ends_at for w in windows)
                continue
            opening = _next_opening(rules, at)
            if opening is None:
                break
            at = opening
        return None if at == now else at


def _next_opening(rules: list[BusinessHours], now: datetime) -> datetime | None:
    """The next opening of any rule, or None when a rule is open now or there is no rule."""
    if not rules or any(rule.is_open(now) for rule in rules):
        return None
    return min(rule.next_open(now) for rule in rules)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(UTC)")


def _epoch(instant: datetime | None) -> int | None:
    return None if instant is None else (instant - EPOCH) // timedelta(seconds=1)


def _local(instant: datetime, zone: ZoneInfo, *, weekday: bool = False) -> str:
    local = instant.astimezone(zone)
    # Not %a: its spelling follows the process locale.
    day = f"{DAYS[local.weekday()].title()} " if weekday else ""
    return f"{day}{local:%Y-%m-%d %H:%M} {zone.key}"


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _day_ranges(days: list[Day]) -> str:
    """mon, tue, wed, thu, sat -> 'Mon–Thu, Sat': runs of three or more days read as a range."""
    indexes = sorted({DAYS.index(day) for day in days})
    runs: list[list[int]] = []
    for i in indexes:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    names = [[DAYS[i].title() for i in run] for run in runs]
    return ", ".join(f"{run[0]}–{run[-1]}" if len(run) >= 3 else ", ".join(run) for run in names)


def _problems(exc: ValidationError) -> str:
    """Pydantic's errors as `freezes[0].timezone: unknown IANA time zone ...`, one per problem."""

    def one(error: Any) -> str:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".") or "top level"
        if error["type"] == "extra_forbidden":
            return f"{where}: unknown key"
        if error["type"] == "value_error":
            return f"{where}: {error['ctx']['error']}"
        return f"{where}: {error['msg']}"

    return "; ".join(one(error) for error in exc.errors())
