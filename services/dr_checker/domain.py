"""DR readiness rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts.events import CheckResult
from releasegate_platform.pgtools.catalog import Drill


@dataclass(frozen=True)
class Backup:
    path: str
    finished_at: datetime
    bytes: int
    file_intact: bool


def backup_freshness(database: str, newest: Backup | None, rpo_seconds: int, now: datetime) -> CheckResult:
    if newest is None:
        return CheckResult(
            name="backup_freshness",
            passed=False,
            reason=f"no backup of database {database!r} in the backup catalog",
            evidence={"rpo_seconds": rpo_seconds},
        )
    age = (now - newest.finished_at).total_seconds()
    evidence = {
        "newest_backup_at": newest.finished_at.isoformat(),
        "age_seconds": round(age, 1),
        "rpo_seconds": rpo_seconds,
        "path": newest.path,
        "bytes": newest.bytes,
    }
    if not newest.file_intact:
        return CheckResult(
            name="backup_freshness",
            passed=False,
            evidence=evidence,
            reason=f"newest backup {newest.path} is missing or does not match its recorded sha256",
        )
    if age > rpo_seconds:
        return CheckResult(
            name="backup_freshness",
            passed=False,
            evidence=evidence,
            reason=f"newest backup is {age:.0f}s old, older than the RPO of {rpo_seconds:g}s",
        )
    return CheckResult(
        name="backup_freshness",
        passed=True,
        evidence=evidence,
        reason=f"newest backup is {age:.0f}s old, within the RPO of {rpo_seconds:g}s",
    )


def restore_drill(
    database: str, last: Drill | None, max_age_seconds: float, rto_seconds: float, now: datetime
) -> list[CheckResult]:
    """A successful restore drill recent enough, and a measured restore time within the RTO."""
    if last is None:
        reason = f"no restore drill of {database!r} on record: run `releasegate dr drill` to prove a restore works"
        return [
            CheckResult(
                name="restore_drill_recency", passed=False, reason=reason, evidence={"max_age_seconds": max_age_seconds}
            ),
            CheckResult(
                name="restore_time_within_rto", passed=False, reason=reason, evidence={"rto_seconds": rto_seconds}
            ),
        ]
    age = (now - last.started_at).total_seconds()
    recency = {
        "drill_at": last.started_at.isoformat(),
        "age_seconds": round(age, 1),
        "max_age_seconds": max_age_seconds,
        "integrity_checks": last.checks,
    }
    if not last.passed:
        recent = CheckResult(
            name="restore_drill_recency",
            passed=False,
            evidence=recency,
            reason=f"the last restore drill ({age:.0f}s ago) failed: {last.reason}",
        )
    elif age > max_age_seconds:
        recent = CheckResult(
            name="restore_drill_recency",
            passed=False,
            evidence=recency,
            reason=f"the last successful restore drill is {age:.0f}s old, older than the "
            f"{max_age_seconds:g}s the tier allows",
        )
    else:
        recent = CheckResult(
            name="restore_drill_recency",
            passed=True,
            evidence=recency,
            reason=f"restore drill {age:.0f}s ago passed its {len(last.checks)} integrity checks",
        )
    timing = {"restore_seconds": round(last.seconds, 3), "rto_seconds": rto_seconds}
    within = last.seconds <= rto_seconds
    rto = CheckResult(
        name="restore_time_within_rto",
        passed=within,
        evidence=timing,
        reason=f"measured restore took {last.seconds:.2f}s, "
        + (f"within the RTO of {rto_seconds:g}s" if within else f"slower than the RTO of {rto_seconds:g}s"),
    )
    return [recent, rto]


def replica_lag(lag_seconds: float | None, error: str | None, rpo_seconds: float) -> CheckResult:
    evidence = {"lag_seconds": None if lag_seconds is None else round(lag_seconds, 2), "rpo_seconds": rpo_seconds}
    if error is not None or lag_seconds is None:
        return CheckResult(
            name="replica_lag",
            passed=False,
            evidence=evidence,
            reason=f"standby not usable: {error or 'it reports no replay position'}",
        )
    ok = lag_seconds <= rpo_seconds
    return CheckResult(
        name="replica_lag",
        passed=ok,
        evidence=evidence,
        reason=f"standby replays {lag_seconds:.1f}s behind the primary, "
        + (f"within the RPO of {rpo_seconds:g}s" if ok else f"more than the RPO of {rpo_seconds:g}s"),
    )


REQUIRED_RUNBOOKS = ("restore", "failover")


def runbooks(tier: int, declared: dict[str, str], present: dict[str, bool]) -> CheckResult:
    """Tier-1 services need a restore and a failover runbook that actually exist."""
    needed = REQUIRED_RUNBOOKS if tier == 1 else ()
    missing = [name for name in needed if name not in declared]
    absent = [f"{name} ({declared[name]})" for name in declared if not present.get(name, False)]
    evidence = {"runbooks": declared, "required": list(needed)}
    if missing or absent:
        parts = ([f"no {', '.join(missing)} runbook in the catalog"] if missing else []) + (
            [f"runbook not found: {', '.join(absent)}"] if absent else []
        )
        return CheckResult(name="runbooks", passed=False, evidence=evidence, reason="; ".join(parts))
    return CheckResult(
        name="runbooks",
        passed=True,
        evidence=evidence,
        reason=f"runbooks present: {', '.join(declared) or 'none required'}",
    )


def database_refusal(service: str, catalog_database: str, requested: str) -> str | None:
    """Why a command naming `requested` may not act on the database the catalog gives `service` (None if it
    may): the command's field is a cross-check, never the source of the name."""
    if requested == catalog_database:
        return None
    return (
        f"the command names database {requested[:80]!r} but the catalog says service {service!r} owns "
        f"{catalog_database!r}; refused"
    )


@dataclass(frozen=True)
class TopicRetention:
    """What the broker says about a topic's retention; `error` when it could not be read."""

    topic: str
    retention_ms: int | None = None
    retention_bytes: int | None = None
    cleanup_policy: str | None = None
    error: str | None = None


# The longest a release may hold its backup point: from the backup point (before production migrations) until its
# last possible data restore. A paused or held release can wait longer than its steps' timeouts; a day leaves time
# for an operator, and the restore itself checks the topic again before it touches anything.
BACKUP_POINT_HOLD_SECONDS = 86400.0


def events_replayable(retention: TopicRetention, hold_seconds: float) -> CheckResult:
    """Before a backup point is taken: will every business event from now until the release ends still be in the
    topic when a restore needs to replay it? Time retention must outlast the hold, size retention must be off
    (it deletes by volume, at any age), and the topic must not be compacted (it keeps one event per key). Failing
    says `outcome: wait`: nothing is wrong with the release, the topic must be fixed first."""
    evidence = {
        "topic": retention.topic,
        "hold_seconds": hold_seconds,
        "retention_ms": retention.retention_ms,
        "retention_bytes": retention.retention_bytes,
        "cleanup_policy": retention.cleanup_policy,
    }
    problems = []
    if retention.error is not None:
        problems.append(f"cannot read the retention of {retention.topic}: {retention.error}")
    else:
        if retention.cleanup_policy is None or "compact" in retention.cleanup_policy:
            problems.append(
                f"{retention.topic} has cleanup.policy={retention.cleanup_policy}: only `delete` keeps every event"
            )
        if retention.retention_ms is None or -1 < retention.retention_ms < hold_seconds * 1000:
            problems.append(
                f"{retention.topic} keeps events {_ms(retention.retention_ms)}, less than the "
                f"{hold_seconds:g}s a release may hold its backup point"
            )
        if retention.retention_bytes is None or retention.retention_bytes != -1:
            problems.append(
                f"{retention.topic} has retention.bytes={retention.retention_bytes}: events may be "
                "deleted by size at any age; set it to -1"
            )
    if problems:
        return CheckResult(
            name="events_replayable",
            passed=False,
            evidence=evidence | {"outcome": "wait"},
            reason="events since the backup point might not all be replayable: " + "; ".join(problems),
        )
    return CheckResult(
        name="events_replayable",
        passed=True,
        evidence=evidence,
        reason=f"{retention.topic} keeps every event {_ms(retention.retention_ms)}, longer than the "
        f"{hold_seconds:g}s a release may hold its backup point",
    )


def _ms(retention_ms: int | None) -> str:
    if retention_ms is None:
        return "for an unknown time"
    return "for ever" if retention_ms < 0 else f"for {retention_ms / 1000:g}s"
