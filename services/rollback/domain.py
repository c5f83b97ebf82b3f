"""Rollback rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.events import RollbackRequested


class RollbackError(Exception):
    """A compensation could not be completed; the release ends rollback_failed."""


def backup_point_refusal(req: RollbackRequested, database: str, point: Mapping[str, Any] | None) -> str | None:
    """Why a data restore may not restore the backup it names (None if it may): only the backup point the
    dr-checker took for this same release, of the service's own database. `point`: the backup catalog's row
    (database, kind, release_id), None when there is none."""
    if req.compensation != "restore_data":
        return None
    if req.backup_id is None:
        return "restore_data names no backup point"
    if point is None:
        return f"backup {req.backup_id} is not in the backup catalog"
    if point["database"] != database:
        return f"backup {req.backup_id} is of database {point['database']}, not {database}"
    if point["kind"] != "backup-point" or point["release_id"] != req.release_id:
        taken = (
            f"the backup point of release {point['release_id']}"
            if point["kind"] == "backup-point"
            else f"a {point['kind']} backup"
        )
        return f"backup {req.backup_id} is {taken}, not the backup point of release {req.release_id}"
    return None
