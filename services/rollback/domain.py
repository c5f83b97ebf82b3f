"""Rollback rules."""
from __future__ import annotations


class RollbackError(Exception):
    """A compensation could not be completed; the release ends rollback_failed."""
