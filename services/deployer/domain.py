"""Deployer rules: how a requested share of traffic splits between candidate and stable."""

from __future__ import annotations


class DeployError(Exception):
    """A deploy step could not be carried out; the reason goes back to the coordinator."""


def traffic_split(candidate: str, stable: str | None, weight: int) -> dict[str, int]:
    if stable is None or stable == candidate:
        return {candidate: 100}
    return {candidate: weight, stable: 100 - weight}
