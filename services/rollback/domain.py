"""Rollback rules."""

from __future__ import annotations

from pathlib import Path

from contracts.events import RollbackRequested
from releasegate_platform.pgtools.dumps import dump_name


class RollbackError(Exception):
    """A compensation could not be completed; the release ends rollback_failed."""


def backup_point_refusal(req: RollbackRequested, database: str) -> str | None:
    """Why a data restore may not restore the backup it names (None if it may): only the backup point the
    dr-checker took for this same release, of the service's own database, as the command carries it
    (`backup_point`, from the dr-checker's result). Its file name must be the one pg_dump of that database at that
    time got, and its time the command's `since` (both bound by the step grant), so no other dump in the folder
    can stand in for it; the file's digest is checked before anything is restored."""
    if req.compensation != "restore_data":
        return None
    if req.backup_id is None:
        return "restore_data names no backup point"
    point = req.backup_point
    if point is None:
        return (
            f"restore_data of backup {req.backup_id} carries no backup point (file, sha256, database): the "
            "coordinator must send the dr-checker's DRCheckFinished.backup_point with it; nothing is restored "
            "from a backup the command does not describe"
        )
    if point.backup_id != req.backup_id:
        return f"the command names backup {req.backup_id} but describes backup {point.backup_id}"
    if point.database != database:
        return f"backup {req.backup_id} is of database {point.database}, not {database}"
    if point.kind != "backup-point" or point.release_id != req.release_id:
        taken = (
            f"the backup point of release {point.release_id}"
            if point.kind == "backup-point"
            else f"a {point.kind} backup"
        )
        return f"backup {req.backup_id} is {taken}, not the backup point of release {req.release_id}"
    if req.since is not None and point.taken_at != req.since:
        return (
            f"backup {req.backup_id} was taken at {point.taken_at.isoformat()}, not at the command's "
            f"{req.since.isoformat()}"
        )
    if Path(point.path).name != dump_name(database, point.taken_at):
        return (
            f"backup {req.backup_id}'s file {Path(point.path).name[:100]!r} is not the dump of {database} taken at "
            f"{point.taken_at.isoformat()} ({dump_name(database, point.taken_at)})"
        )
    return None
