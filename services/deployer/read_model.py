"""The deployer's read model: what runs in each environment (`EnvironmentState` on `release.environments`),
staged in the deployer's outbox in the caller's transaction, so the gatekeeper and the verifiers learn it from a
contract instead of reading the deployer's tables.

Call `stage` after every change of an environment (bootstrap, finalize, a weight or instance change, a
compensation). Each state carries a sequence drawn under a per-environment lock, so states of one environment
are numbered in the order they were read, and consumers keep the highest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import asyncpg

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import EnvironmentState, ObservedState, ServingVersion
from contracts.names import MAX_RELEASE_ID
from releasegate_runtime import outbox

PRODUCER = "deployer"
SOURCE = "releasegate/deployer"
# serialises the states of one environment: the lock is taken before the sequence is drawn and the state is read
LOCK_NAMESPACE = 0x72676576  # "rgev"


def key(service: str, environment: str) -> str:
    """The record key (CloudEvents subject), one per service and environment, so compaction keeps the newest
    state of each. `<service>.<environment>` when that cannot be mistaken for another pair, else a digest."""
    readable = f"{service}.{environment}"
    if "." not in service and len(readable) <= MAX_RELEASE_ID:
        return readable
    return "env-" + hashlib.sha256(f"{service}\0{environment}".encode()).hexdigest()[:48]


def endpoint(port: int) -> str:
    """Base URL of a local instance (the local target runs every instance on this machine)."""
    return f"http://127.0.0.1:{port}"


async def read(
    conn: asyncpg.Connection, service: str, environment: str, weights: Mapping[str, int], sequence: int
) -> EnvironmentState:
    """The environment as the deployer's tables hold it: its stable version and the versions with serving
    instances, each with the weight `weights` gives it (what the target reports; 0 when it names none)."""
    stable = await conn.fetchrow(
        "SELECT stable_version, stable_digest FROM environments WHERE service = $1 AND environment = $2",
        service,
        environment,
    )
    rows = await conn.fetch(
        "SELECT version, digest, release_id, port FROM instances"
        " WHERE service = $1 AND environment = $2 AND state = 'serving' ORDER BY id",
        service,
        environment,
    )
    serving: dict[str, dict] = {}
    for row in rows:
        version = serving.setdefault(
            row["version"],
            {
                "version": row["version"],
                "digest": row["digest"],
                "release_id": row["release_id"],
                "weight": int(weights.get(row["version"], 0)),
                "endpoints": [],
            },
        )
        version["endpoints"].append(endpoint(row["port"]))
    return EnvironmentState(
        service=service,
        environment=environment,
        sequence=sequence,
        stable_version=stable["stable_version"] if stable else None,
        stable_digest=stable["stable_digest"] if stable else None,
        serving=[ServingVersion(**v) for v in serving.values()],
        observed_at=datetime.now(UTC),
    )


def observed(
    service: str, environment: str, state: ObservedState, stable: tuple[str, str] | None, sequence: int
) -> EnvironmentState:
    """The environment as a target that holds its own truth (the Kubernetes API server) reports it: every version
    with a ready replica, its digest and release from its workload, its in-cluster endpoint."""
    serving: dict[str, dict] = {}
    for inst in state.instances:
        version, digest = inst.get("version"), inst.get("digest")
        if not version or not digest or not inst.get("ready"):
            continue
        entry = serving.setdefault(
            version,
            {
                "version": version,
                "digest": digest,
                "release_id": inst.get("release_id"),
                "weight": int(state.weights.get(version, 0)),
                "endpoints": [],
            },
        )
        if inst.get("endpoint"):
            entry["endpoints"].append(inst["endpoint"])
    return EnvironmentState(
        service=service,
        environment=environment,
        sequence=sequence,
        stable_version=stable[0] if stable else None,
        stable_digest=stable[1] if stable else None,
        serving=[ServingVersion(**v) for v in serving.values()],
        observed_at=datetime.now(UTC),
    )


async def stage(
    conn: asyncpg.Connection,
    service: str,
    environment: str,
    weights: Mapping[str, int],
    build: Callable[[int], EnvironmentState] | None = None,
) -> EnvironmentState:
    """Read the environment's state and stage it in the deployer's outbox; published when the transaction
    commits (the deployer's relay publishes it, also when a bootstrap script staged it). `build(sequence)`: the
    state from what the target observed (see `observed`); without it, from the local target's tables."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", LOCK_NAMESPACE, key(service, environment))
        sequence = await conn.fetchval("SELECT nextval('environment_state_sequence')")
        if build is not None:
            state = build(sequence)
        else:
            state = await read(conn, service, environment, weights, sequence)
        envelope = Envelope.new(state, SOURCE, subject=key(service, environment))
        await outbox.add(conn, PRODUCER, topics.ENVIRONMENTS, envelope)
    return state
