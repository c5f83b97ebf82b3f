"""The broker side of the bus policy, done with the `admin` super user: topics, one SCRAM-SHA-512 credential per
principal, and the ACLs reconciled to exactly deploy/kafka/acls.yaml (confluent-kafka's AdminClient, which has
the SCRAM and ACL admin APIs aiokafka lacks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from contracts import topics
from releasegate_runtime import secrets
from releasegate_runtime.bus import BusPolicy, Grant, Principal

# A release's records are keyed by its id: it stays on one partition of each topic (ordered) and moves with that
# partition when a consumer group rebalances. The release topics have enough partitions for several instances of
# every service (make up RG_INSTANCES=3, bench/scale.py); the shop's own topics keep the shop's choice.
PARTITIONS = 3
RELEASE_PARTITIONS = 6
SCRAM_ITERATIONS = 8192
TIMEOUT = 30.0
_RESOURCES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}


class BusAdminError(RuntimeError):
    """The broker refused or did not answer a provisioning request."""


@dataclass(frozen=True)
class Applied:
    topics_created: list[str]
    users: list[str]
    acls_created: int
    acls_deleted: int


def admin_client(bootstrap: str, secrets_dir: Path, ca_file: Path | None = None) -> AdminClient:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_SSL" if ca_file else "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": secrets.ADMIN,
        "sasl.password": secrets.read(secrets_dir, "kafka", secrets.ADMIN),
        "socket.timeout.ms": 10000,
        "log_level": 4,
    }  # warnings and worse: not librdkafka's informational shutdown notices
    if ca_file:
        config["ssl.ca.location"] = str(ca_file)
    return AdminClient(config)


def _wait(futures: dict[Any, Any], what: str, ignore: tuple[str, ...] = ()) -> None:
    for key, future in futures.items():
        try:
            future.result(timeout=TIMEOUT)
        except KafkaException as exc:
            if exc.args and getattr(exc.args[0], "name", lambda: "")() in ignore:
                continue
            raise BusAdminError(f"{what} {key}: {exc}") from None


def binding(grant: Grant) -> AclBinding:
    return AclBinding(
        _RESOURCES[grant.resource],
        grant.name,
        ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
        f"User:{grant.principal}",
        "*",
        AclOperation[grant.operation],
        AclPermissionType.ALLOW,
    )


def _key(b: AclBinding) -> tuple[Any, ...]:
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)


def ensure_topics(admin: AdminClient, names: list[str]) -> list[str]:
    """Create the missing topics; a topic of `topics.COMPACTED` is compacted (also one created before it was)."""
    existing = set(admin.list_topics(timeout=TIMEOUT).topics)
    missing = [t for t in names if t not in existing]
    if missing:
        _wait(
            admin.create_topics([NewTopic(t, partitions_of(t), 1, config=_topic_config(t)) for t in missing]),
            "create topic",
            ignore=("TOPIC_ALREADY_EXISTS",),
        )
    grow = _too_few_partitions(admin, [t for t in names if t in existing])
    if grow:
        # more partitions move keys: done when the stack is prepared (make stack / install), never mid-release
        _wait(admin.create_partitions(grow), "add partitions to", ignore=("INVALID_PARTITIONS",))
    compacted = [
        ConfigResource(ResourceType.TOPIC, t, incremental_configs=[_COMPACT])
        for t in names
        if t in topics.COMPACTED and t in existing
    ]
    if compacted:
        _wait(admin.incremental_alter_configs(compacted), "compact topic")
    return missing


def partitions_of(topic: str) -> int:
    compacted_state = topic in topics.COMPACTED
    return RELEASE_PARTITIONS if topic.startswith("release.") and not compacted_state else PARTITIONS


def _too_few_partitions(admin: AdminClient, names: list[str]) -> list[NewPartitions]:
    if not names:
        return []
    listed = admin.list_topics(timeout=TIMEOUT).topics
    return [
        NewPartitions(t, partitions_of(t))
        for t in names
        if t in listed and len(listed[t].partitions) < partitions_of(t)
    ]


_COMPACT = ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)


def _topic_config(topic: str) -> dict[str, str]:
    return {"cleanup.policy": "compact"} if topic in topics.COMPACTED else {}


def ensure_users(admin: AdminClient, secrets_dir: Path, principals: list[str]) -> None:
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(
            name,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            secrets.read(secrets_dir, "kafka", name).encode(),
        )
        for name in principals
    ]
    if upserts:
        _wait(admin.alter_user_scram_credentials(upserts), "SCRAM credential of")


def reconcile_acls(admin: AdminClient, grants: list[Grant], *, prune: bool) -> tuple[int, int]:
    """Create the missing bindings; with `prune`, delete every binding not in `grants`."""
    wanted = {_key(b): b for b in map(binding, grants)}
    # None is the filter's wildcard for name, principal and host (the library's annotations say str)
    any_filter = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    existing = {_key(b): b for b in admin.describe_acls(any_filter).result(timeout=TIMEOUT)}
    create = [b for k, b in wanted.items() if k not in existing]
    delete = [b for k, b in existing.items() if k not in wanted] if prune else []
    if create:
        _wait(admin.create_acls(create), "create ACL")
    if delete:
        filters = [
            AclBindingFilter(
                b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type
            )
            for b in delete
        ]
        _wait(admin.delete_acls(filters), "delete ACL")
    return len(create), len(delete)


def apply(policy: BusPolicy, admin: AdminClient, secrets_dir: Path) -> Applied:
    """Make the broker match the policy: topics, a credential per principal, exactly the declared ACLs."""
    created = ensure_topics(admin, sorted({*policy.topics(), *policy.results_producers()}))
    ensure_users(admin, secrets_dir, list(policy.principals))
    made, deleted = reconcile_acls(admin, policy.grants(), prune=True)
    return Applied(created, list(policy.principals), made, deleted)


def register(principal: Principal, admin: AdminClient, secrets_dir: Path) -> Path:
    """Add one principal (a team verifier) without touching the others; returns its password file."""
    path, _ = secrets.ensure_kafka_password(secrets_dir, principal.name)
    ensure_topics(admin, [t for t in principal.produce if not t.endswith("*")])
    ensure_users(admin, secrets_dir, [principal.name])
    reconcile_acls(admin, principal.grants(), prune=False)
    return path
