"""DR readiness rules."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts.events import CheckResult


@dataclass(frozen=True)
class Backup:
    path: str
    finished_at: datetime
    bytes: int
    file_intact: bool


def backup_freshness(database: str, newest: Backup | None, rpo_seconds: int, now: datetime) -> CheckResult:
    if newest is None:
        return CheckResult(name="backup_freshness", passed=False,
                           reason=f"no backup of database {database!r} in the backup catalog",
                           evidence={"rpo_seconds": rpo_seconds})
    age = (now - newest.finished_at).total_seconds()
    evidence = {"newest_backup_at": newest.finished_at.isoformat(), "age_seconds": round(age, 1),
                "rpo_seconds": rpo_seconds, "path": newest.path, "bytes": newest.bytes}
    if not newest.file_intact:
        return CheckResult(name="backup_freshness", passed=False, evidence=evidence,
                           reason=f"newest backup {newest.path} is missing or does not match its recorded sha256")
    if age > rpo_seconds:
        return CheckResult(name="backup_freshness", passed=False, evidence=evidence,
                           reason=f"newest backup is {age:.0f}s old, older than the RPO of {rpo_seconds:g}s")
    return CheckResult(name="backup_freshness", passed=True, evidence=evidence,
                       reason=f"newest backup is {age:.0f}s old, within the RPO of {rpo_seconds:g}s")


@dataclass(frozen=True)
class Drill:
    started_at: datetime
    seconds: float
    passed: bool
    reason: str
    checks: list[dict]


def restore_drill(database: str, last: Drill | None, max_age_seconds: float, rto_seconds: float,
                  now: datetime) -> list[CheckResult]:
    """A successful restore drill recent enough, and a measured restore time within the RTO."""
    if last is None:
        reason = f"no restore drill of {database!r} on record: run `releasegate dr drill` to prove a restore works"
        return [CheckResult(name="restore_drill_recency", passed=False, reason=reason,
                            evidence={"max_age_seconds": max_age_seconds}),
                CheckResult(name="restore_time_within_rto", passed=False, reason=reason,
                            evidence={"rto_seconds": rto_seconds})]
    age = (now - last.started_at).total_seconds()
    recency = {"drill_at": last.started_at.isoformat(), "age_seconds": round(age, 1),
               "max_age_seconds": max_age_seconds, "integrity_checks": last.checks}
    if not last.passed:
        recent = CheckResult(name="restore_drill_recency", passed=False, evidence=recency,
                             reason=f"the last restore drill ({age:.0f}s ago) failed: {last.reason}")
    elif age > max_age_seconds:
        recent = CheckResult(name="restore_drill_recency", passed=False, evidence=recency,
                             reason=f"the last successful restore drill is {age:.0f}s old, older than the "
                                    f"{max_age_seconds:g}s the tier allows")
    else:
        recent = CheckResult(name="restore_drill_recency", passed=True, evidence=recency,
                             reason=f"restore drill {age:.0f}s ago passed its {len(last.checks)} integrity checks")
    timing = {"restore_seconds": round(last.seconds, 3), "rto_seconds": rto_seconds}
    within = last.seconds <= rto_seconds
    rto = CheckResult(name="restore_time_within_rto", passed=within, evidence=timing,
                      reason=f"measured restore took {last.seconds:.2f}s, "
                             + (f"within the RTO of {rto_seconds:g}s" if within
                                else f"slower than the RTO of {rto_seconds:g}s"))
    return [recent, rto]


def replica_lag(lag_seconds: float | None, error: str | None, rpo_seconds: float) -> CheckResult:
    evidence = {"lag_seconds": None if lag_seconds is None else round(lag_seconds, 2), "rpo_seconds": rpo_seconds}
    if error is not None or lag_seconds is None:
        return CheckResult(name="replica_lag", passed=False, evidence=evidence,
                           reason=f"standby not usable: {error or 'it reports no replay position'}")
    ok = lag_seconds <= rpo_seconds
    return CheckResult(name="replica_lag", passed=ok, evidence=evidence,
                       reason=f"standby replays {lag_seconds:.1f}s behind the primary, "
                              + (f"within the RPO of {rpo_seconds:g}s" if ok else f"more than the RPO of {rpo_seconds:g}s"))


REQUIRED_RUNBOOKS = ("restore", "failover")


def runbooks(tier: int, declared: dict[str, str], present: dict[str, bool]) -> CheckResult:
    """Tier-1 services need a restore and a failover runbook that actually exist."""
    needed = REQUIRED_RUNBOOKS if tier == 1 else ()
    missing = [name for name in needed if name not in declared]
    absent = [f"{name} ({declared[name]})" for name in declared if not present.get(name, False)]
    evidence = {"runbooks": declared, "required": list(needed)}
    if missing or absent:
        parts = ([f"no {', '.join(missing)} runbook in the catalog"] if missing else []) + \
                ([f"runbook not found: {', '.join(absent)}"] if absent else [])
        return CheckResult(name="runbooks", passed=False, evidence=evidence, reason="; ".join(parts))
    return CheckResult(name="runbooks", passed=True, evidence=evidence,
                       reason=f"runbooks present: {', '.join(declared) or 'none required'}")
