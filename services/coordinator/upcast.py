"""Stored saga bodies of older shapes read as the current one (eventsourcing's upcasting): the sagas table keeps
each body as it was written, the coordinator upcasts it on load and writes the current shape back.

v1 (no `schema_version`): the catalog's rules and what the saga had learnt in one untyped `verification` dict;
each step a `compensable` flag, its compensation worked out at failure time. v2: a typed `config`, the learnt
facts as their own fields, each step its named compensation."""

from __future__ import annotations

from typing import Any

from services.coordinator import compensation
from services.coordinator.model import SCHEMA_VERSION, Saga

# keys of v1's `verification` that were the catalog's rules (the rest is what the saga learnt)
_V1_CONFIG_KEYS = (
    "catalog_revision",
    "min_samples",
    "grace_seconds",
    "on_inconclusive",
    "false_rollback_bound",
    "instances",
    "batch_size",
    "rolled",
    "synthetic",
    "prometheus",
    "thresholds",
    "dr",
    "approver_group",
    "verifiers",
)
_V1_STATE_KEYS = ("verdicts", "extended", "failure_reason", "dr_report", "staging_verdict")


class UpcastError(ValueError):
    """A stored body of a version this coordinator cannot read."""


def load(body: dict[str, Any]) -> Saga:
    """The saga in `body`, whatever version wrote it."""
    return Saga.model_validate(upcast(body))


def upcast(body: dict[str, Any]) -> dict[str, Any]:
    """`body` brought to the current `SCHEMA_VERSION`, one version at a time."""
    version = body.get("schema_version", 1)
    if not isinstance(version, int) or version < 1 or version > SCHEMA_VERSION:
        raise UpcastError(f"saga body of schema version {version!r}; this coordinator reads 1 to {SCHEMA_VERSION}")
    steps = {1: _v1_to_v2}
    while version < SCHEMA_VERSION:
        body = steps[version](body)
        version = body["schema_version"]
    return body


def _v1_to_v2(body: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k != "verification"}
    verification: dict[str, Any] = dict(body.get("verification") or {})
    unknown = set(verification) - set(_V1_CONFIG_KEYS) - set(_V1_STATE_KEYS)
    if unknown:
        raise UpcastError(f"v1 saga body with unknown verification keys {sorted(unknown)}")
    config = {k: verification[k] for k in _V1_CONFIG_KEYS if k in verification}
    out["config"] = config or None  # a release rejected at submission had none
    for key in _V1_STATE_KEYS:
        if key in verification:
            out[key] = verification[key]
    migrations = body.get("migrations") or []
    rolled = bool(verification.get("rolled"))
    out["plan"] = [_v1_step(step, migrations, rolled) for step in body.get("plan", [])]
    out["compensations"] = [_v1_compensation(c) for c in body.get("compensations", [])]
    out["schema_version"] = 2
    return out


def _v1_step(step: dict[str, Any], migrations: list[dict[str, Any]], rolled: bool) -> dict[str, Any]:
    """v1's `compensable` as the name of the compensation v1 would have run for the step's environment."""
    out = {k: v for k, v in step.items() if k != "compensable"}
    env = step.get("environment")
    if not step.get("compensable") or env is None:
        out["compensation"] = None
    elif rolled and env == "production":
        out["compensation"] = compensation.named("redeploy-stable", env)
    elif step.get("action") == "migrate":
        out["compensation"] = compensation.for_migration(env, migrations)
    else:
        out["compensation"] = compensation.named("restore-traffic", env)
    return out


def _v1_compensation(comp: dict[str, Any]) -> dict[str, Any]:
    env = comp["environment"]
    if comp.get("redeploy"):
        name = compensation.named("redeploy-stable", env)
    elif comp.get("kind") == "restore_data":
        name = compensation.named("restore-data", env)
    else:
        name = compensation.named("restore-traffic", env)
    return {**comp, "name": name}
