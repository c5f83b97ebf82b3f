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
                           reason=f"newest backup is {age:.0f}s old, older than the RPO of {rpo_seconds}s")
    return CheckResult(name="backup_freshness", passed=True, evidence=evidence,
                       reason=f"newest backup is {age:.0f}s old, within the RPO of {rpo_seconds}s")
