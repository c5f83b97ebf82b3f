"""The probes behind the parity report: what each environment really is, as flat facts for `parity.compare`.

Deployment method and strategy come from the catalog (and how the coordinator deploys staging); the database
engine's version and key settings from the environment's database itself (SHOW, as a role that may only connect);
Kafka topic configurations from the broker (DescribeConfigs, as the caller's own principal); security controls from
the environment manifests; integration contract versions and feature settings from the bundle's regional
configuration; the edge cache from deploy/varnish. A probe that fails adds an error, never a guessed value."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import yaml
from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, ResourceType

from releasegate_platform.catalog import ServiceEntry
from releasegate_platform.parity import ENVIRONMENTS, Facts
from releasegate_platform.regional import RegionalSet
from releasegate_runtime.kafka import admin_client
from releasegate_runtime.settings import ServiceSettings

TIMEOUT = 5.0
MEASURE_TIMEOUT = 30.0
# What decides whether a release behaves the same on both databases: the engine, connection capacity, the
# defaults every query runs under.
DATABASE_SETTINGS = (
    "server_version",
    "max_connections",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "default_transaction_isolation",
    "TimeZone",
    "work_mem",
    "shared_buffers",
)
TOPIC_SETTINGS = (
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "min.insync.replicas",
    "max.message.bytes",
    "compression.type",
    "message.timestamp.type",
)
# The coordinator's plan deploys staging whole (weight 100) and verifies it; production follows the catalog's
# rollout strategy (services/coordinator/plans).
STAGING_STRATEGY = "all-at-once"
EDGE_SETTINGS = ("EDGE_STORAGE", "EDGE_DEFAULT_TTL")


@dataclass(frozen=True)
class Sources:
    """Where the probes look: the database of each environment, the topics the service depends on, the
    environment manifests and the edge configuration."""

    environments_dir: Path
    edge_dir: Path
    databases: dict[str, str]  # environment → DSN; an environment without one has no database to compare
    topics: dict[str, list[str]]  # environment → topics the service depends on there


def databases_of(settings: ServiceSettings, entry: ServiceEntry) -> dict[str, str]:
    """Each environment's database, as the caller's own role (it needs CONNECT only: SHOW reads settings any
    session may read). Production is the catalog's `dr.database`, staging `<database>_staging`, as the deployer
    names them (services/deployer/config.py)."""
    if not entry.dr.database:
        return {}
    role = settings.database_role()
    return {
        env: settings.role_dsn(role, entry.dr.database if env == "production" else f"{entry.dr.database}_{env}")
        for env in entry.environments
    }


def topics_of(entry: ServiceEntry) -> dict[str, list[str]]:
    """The service's business-event topic; the local stack's environments share one (`<service>.events`)."""
    return {env: [f"{entry.name}.events"] for env in entry.environments}


async def measure(settings: ServiceSettings, entry: ServiceEntry, regional: RegionalSet | None) -> tuple[Facts, Facts]:
    """Staging's and production's facts, probed concurrently from the settings' sources; at most MEASURE_TIMEOUT."""
    sources = Sources(
        environments_dir=settings.environments_dir,
        edge_dir=settings.edge_dir,
        databases=databases_of(settings, entry),
        topics=topics_of(entry),
    )
    async with asyncio.timeout(MEASURE_TIMEOUT):
        staging, production = await asyncio.gather(
            *(gather(settings, entry, env, sources, regional) for env in ENVIRONMENTS)
        )
    return staging, production


async def gather(
    settings: ServiceSettings, entry: ServiceEntry, environment: str, sources: Sources, regional: RegionalSet | None
) -> Facts:
    values: dict[str, str] = {}
    errors: list[str] = []
    values.update(deployment(entry, environment))
    controls, error = security_controls(sources.environments_dir, environment)
    values.update(controls)
    errors += [error] if error else []
    dsn = sources.databases.get(environment)
    if dsn is not None:
        found, error = await database(dsn)
        values.update(found)
        errors += [error] if error else []
    for topic in sources.topics.get(environment, []):
        found, error = await topic_configs(settings, topic)
        values.update(found)
        errors += [error] if error else []
    if regional is not None:
        found, error = integrations(regional, environment)
        values.update(found)
        errors += [error] if error else []
    found, error = edge(sources.edge_dir, environment)
    values.update(found)
    errors += [error] if error else []
    return Facts(environment, values, errors)


def deployment(entry: ServiceEntry, environment: str) -> dict[str, str]:
    strategy = entry.rollout.strategy if environment == "production" else STAGING_STRATEGY
    return {"deployment.target": entry.target(environment).kind, "deployment.strategy": strategy}


def security_controls(directory: Path, environment: str) -> tuple[dict[str, str], str | None]:
    """`security.control.<name>`: declared, for each control the manifest declares (a missing manifest declares
    none); the comparison sees a control one side lacks as `(absent)`."""
    path = directory / f"{environment}.yaml"
    if not path.is_file():
        return {}, None
    try:
        manifest = yaml.safe_load(path.read_text()) or {}
        controls = [str(c) for c in manifest.get("controls", [])]
    except (OSError, yaml.YAMLError, AttributeError, TypeError) as exc:
        return {}, f"environment manifest {path.name} is unreadable ({type(exc).__name__})"
    return {f"security.control.{c}": "declared" for c in controls}, None


async def database(dsn: str) -> tuple[dict[str, str], str | None]:
    try:
        conn = await asyncpg.connect(dsn, timeout=TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return {}, f"database unreachable, its engine and settings cannot be compared ({type(exc).__name__}: {exc})"
    try:
        values = {}
        for name in DATABASE_SETTINGS:
            values[f"database.{name.lower()}"] = str(await conn.fetchval(f"SHOW {name}", timeout=TIMEOUT))
        return values, None
    except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return {}, f"cannot read the database settings ({type(exc).__name__}: {exc})"
    finally:
        await conn.close(timeout=TIMEOUT)


def _describe(settings: ServiceSettings, topic: str) -> dict[str, str]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    admin = admin_client(settings, TIMEOUT)  # kept referenced until the answer: a collected client fails its futures
    entries = admin.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(timeout=TIMEOUT + 1)
    return {
        f"kafka.{topic}.{name}": str(entries[name].value)
        for name in TOPIC_SETTINGS
        if name in entries and entries[name].value is not None
    }


async def topic_configs(settings: ServiceSettings, topic: str) -> tuple[dict[str, str], str | None]:
    try:
        return await asyncio.wait_for(asyncio.to_thread(_describe, settings, topic), TIMEOUT * 2), None
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        name = getattr(error, "name", lambda: "broker error")()
        return {}, f"cannot describe topic {topic} as {settings.principal} ({name})"
    except TimeoutError:
        return {}, f"no answer from the broker about topic {topic} within {TIMEOUT * 2:g}s"
    except ValueError as exc:  # no Kafka credentials for the principal
        return {}, f"cannot describe topic {topic}: {str(exc)[:200]}"


def integrations(regional: RegionalSet, environment: str) -> tuple[dict[str, str], str | None]:
    """`integration.<region>.<kind>.contract` and `feature.<region>.<name>` from the bundle's regional
    configuration of the environment. Endpoints and the sandbox flag are meant to differ (staging talks to the
    providers' sandboxes); the contract version each speaks is not."""
    if regional.problems:
        return {}, "regional configuration refused: " + "; ".join(regional.problems)[:600]
    config = regional.configs.get(environment)
    if config is None:
        return {}, f"the bundle has no regional configuration for {environment} (config/regions/{environment}.yaml)"
    values = {}
    for region, settings in config.regions.items():
        for kind in ("payment", "tax", "fulfilment"):
            values[f"integration.{region}.{kind}.contract"] = getattr(settings, kind).contract
        for name, value in settings.features.items():
            values[f"feature.{region}.{name}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return values, None


def edge(directory: Path, environment: str) -> tuple[dict[str, str], str | None]:
    """`edge.cache`: varnish when deploy/varnish configures an edge for the environment (`varnish.params` is
    production's, `<environment>.params` another's), else none; with its storage and default TTL."""
    path = directory / ("varnish.params" if environment == "production" else f"{environment}.params")
    if not path.is_file():
        return {"edge.cache": "none"}, None
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return {}, f"edge configuration {path.name} is unreadable ({type(exc).__name__})"
    params = dict(line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))
    values = {"edge.cache": "varnish"}
    values.update({f"edge.{k.removeprefix('EDGE_').lower()}": params[k].strip() for k in EDGE_SETTINGS if k in params})
    return values, None
