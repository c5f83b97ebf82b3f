"""Prometheus metrics of releasegate itself: one registry per process, served as GET /metrics on the service's
health port (`runner`). Recording never raises into the caller: a metric is worth less than a handled record.

Label values are bounded: topics, partitions, step kinds, outcomes, states, catalog services, environments and
verifier names, never release ids. Values that are only true when asked (outbox backlog, consumer lag, releases
by state) are sampled on each scrape by async samplers, each under a time limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import asyncpg
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = structlog.get_logger()
CONTENT_TYPE = CONTENT_TYPE_LATEST
SAMPLE_TIMEOUT_SECONDS = 2.0
Sampler = Callable[[], Awaitable[None]]

REGISTRY = CollectorRegistry()
_samplers: dict[str, Sampler] = {}

# --- every service (through the runner) ----------------------------------------------------------------------------
BUILD_INFO = Gauge(
    "releasegate_build_info",
    "The process: its releasegate component and version.",
    ["component", "version"],
    registry=REGISTRY,
)
RECORDS = Counter(
    "releasegate_records_consumed_total",
    "Records consumed, by outcome: ok (handled), retried (transient failure, redelivered), refused (contract "
    "violation, undecodable or permanent error: dead-lettered at once), dead_lettered (given up after retries).",
    ["topic", "outcome"],
    registry=REGISTRY,
)
HANDLER_DURATION = Histogram(
    "releasegate_handler_duration_seconds",
    "Time a handler took for one record (successful or not).",
    ["topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
# Where a hop's time goes (bench/rollback_latency.py and bench/scale.py print the breakdown): a record waits on
# Kafka until a handler takes it, the handler decides and commits, the event waits in the outbox until the relay
# picks it up, and the relay waits for the broker's acknowledgement.
HOP_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 4.096)
RECORD_WAIT = Histogram(
    "releasegate_record_wait_seconds",
    "From a record's Kafka timestamp to its handler starting (fetch and queueing in this process).",
    ["topic"],
    buckets=HOP_BUCKETS,
    registry=REGISTRY,
)
OUTBOX_WAIT = Histogram(
    "releasegate_outbox_wait_seconds",
    "From an event staged in the outbox to the relay picking it up (commit, NOTIFY, wake-up).",
    ["producer"],
    buckets=HOP_BUCKETS,
    registry=REGISTRY,
)
OUTBOX_ACK = Histogram(
    "releasegate_outbox_ack_seconds",
    "From the relay queueing a batch to the broker acknowledging all of it.",
    ["producer"],
    buckets=HOP_BUCKETS,
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "releasegate_dead_letters_total",
    "Records dead-lettered, by reason class (contract, undecodable, permanent, exhausted) and where they went "
    "(topic: release.deadletter; parked: PostgreSQL parked_records).",
    ["topic", "reason_class", "destination"],
    registry=REGISTRY,
)
OUTBOX_PENDING = Gauge(
    "releasegate_outbox_pending_rows", "Outbox rows not yet published, per producer.", ["producer"], registry=REGISTRY
)
OUTBOX_OLDEST = Gauge(
    "releasegate_outbox_oldest_pending_age_seconds",
    "Age of the oldest outbox row not yet published (0 when none), per producer.",
    ["producer"],
    registry=REGISTRY,
)
OUTBOX_PUBLISHED = Counter(
    "releasegate_outbox_published_total", "Outbox rows the relay published.", ["producer"], registry=REGISTRY
)
OUTBOX_REFUSED = Counter(
    "releasegate_outbox_refused_total",
    "Outbox rows the broker refused for good (too large, an invalid topic), kept in the outbox with the reason.",
    ["producer"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "releasegate_consumer_lag_records",
    "Records on an assigned partition not yet consumed (high watermark - position).",
    ["topic", "partition"],
    registry=REGISTRY,
)
SAMPLE_ERRORS = Counter(
    "releasegate_metrics_sample_errors_total",
    "Samplers that failed or timed out during a scrape (their gauges keep the previous values).",
    ["sampler"],
    registry=REGISTRY,
)

# --- domain --------------------------------------------------------------------------------------------------------
RELEASES = Gauge(
    "releasegate_releases",
    "Releases by state: every release in flight, and those that ended within the last day (coordinator).",
    ["state"],
    registry=REGISTRY,
)
RELEASE_STEP_AGE = Gauge(
    "releasegate_release_step_age_seconds",
    "Longest time a release in flight has been in its current state and step, since its saga last moved (coordinator).",
    ["service", "state", "step_kind"],
    registry=REGISTRY,
)
RELEASE_TRANSITIONS = Counter(
    "releasegate_release_transitions_total",
    "State changes of releases (coordinator): running, rolling_back, promoted, rolled_back...",
    ["service", "state"],
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "releasegate_step_duration_seconds",
    "From a step's command to the result that ended it, by step kind (gate, dr, deploy, verify, rollback) and "
    "outcome (passed, failed, inconclusive, timeout, operator) (coordinator).",
    ["kind", "outcome"],
    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
VERDICTS = Counter(
    "releasegate_verdicts_total", "Verdicts sent, by verifier and outcome.", ["verifier", "outcome"], registry=REGISTRY
)
BREACH_TO_DECISION = Histogram(
    "releasegate_breach_to_decision_seconds",
    "From a failing verdict (its CloudEvent time, when the verifier saw the breach) to the coordinator's "
    "decision to roll back.",
    ["environment"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
DECISION_TO_ACTION = Histogram(
    "releasegate_decision_to_action_seconds",
    "From the coordinator's decision to compensate (the step grant's issue time) to the compensation done and "
    "read back from the target (rollback service).",
    ["environment", "compensation"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
VERIFIER_ALIVE = Gauge(
    "releasegate_verifier_alive",
    "1 while an instance of a verifier the catalog requires for a service is alive (heartbeats), else 0.",
    ["verifier", "service"],
    registry=REGISTRY,
)
TRAFFIC_WEIGHT = Gauge(
    "releasegate_traffic_weight",
    "Percent of an environment's traffic per version, as the deployer or rollback service last read it back "
    "from the target (coordinator).",
    ["service", "environment", "version"],
    registry=REGISTRY,
)


def _quietly(what: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as exc:
        log.warning("metric not recorded", metric=what, error=repr(exc))


# --- the process -----------------------------------------------------------------------------------------------------


def configure(component: str) -> None:
    """Name the process (`releasegate_build_info`): one component per process, so a name given before (a test
    that configured another) is forgotten."""
    try:
        version = metadata.version("releasegate")
    except metadata.PackageNotFoundError:
        version = "unknown"
    _quietly("build_info", BUILD_INFO.clear)
    _quietly("build_info", lambda: BUILD_INFO.labels(component, version).set(1))


def add_sampler(name: str, sampler: Sampler) -> None:
    """Run `sampler` at each scrape, before rendering (a later one of the same name replaces it)."""
    _samplers[name] = sampler


def clear_samplers() -> None:
    """Forget every sampler (a stopped service's pool and consumer are gone)."""
    _samplers.clear()


async def _sample(name: str, sampler: Sampler) -> None:
    try:
        await asyncio.wait_for(sampler(), SAMPLE_TIMEOUT_SECONDS)
    except Exception as exc:
        SAMPLE_ERRORS.labels(name).inc()
        log.warning("metrics sampler failed", sampler=name, error=repr(exc))


async def render() -> bytes:
    """The registry in Prometheus text format, after every sampler ran (concurrently, each bounded)."""
    await asyncio.gather(*(_sample(n, s) for n, s in list(_samplers.items())))
    return generate_latest(REGISTRY)


BATCH_DURATION = Histogram(
    "releasegate_batch_duration_seconds",
    "Time a batch of records decided in one transaction took (every handler, then the commit), for a consumer that "
    "handles its records in batches (the coordinator).",
    ["group"],
    buckets=HOP_BUCKETS,
    registry=REGISTRY,
)
BATCH_RECORDS = Histogram(
    "releasegate_batch_records",
    "Records in a batch decided in one transaction.",
    ["group"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
BATCH_FALLBACKS = Counter(
    "releasegate_batch_fallbacks_total",
    "Batches whose transaction failed (a record that must be refused, a concurrent update, an outage): their records "
    "were then handled one by one.",
    ["group"],
    registry=REGISTRY,
)
# --- the consumer path: one counter increment and one histogram observation per record --------------------------


@contextmanager
def handling(topic: str) -> Iterator[None]:
    """Times a handler call; never raises on its own account."""
    started = time.perf_counter()
    try:
        yield
    finally:
        _quietly("handler_duration", lambda: HANDLER_DURATION.labels(topic).observe(time.perf_counter() - started))


def batch_done(group: str, records: int, seconds: float) -> None:
    def observe() -> None:
        BATCH_RECORDS.labels(group).observe(records)
        BATCH_DURATION.labels(group).observe(seconds)

    _quietly("batch", observe)


def batch_fell_back(group: str) -> None:
    _quietly("batch_fallbacks", lambda: BATCH_FALLBACKS.labels(group).inc())


def record_waited(topic: str, record_timestamp_ms: int) -> None:
    waited = max(time.time() - record_timestamp_ms / 1000, 0.0)
    _quietly("record_wait", lambda: RECORD_WAIT.labels(topic).observe(waited))


def outbox_waited(producer: str, seconds: list[float]) -> None:
    def observe() -> None:
        histogram = OUTBOX_WAIT.labels(producer)
        for waited in seconds:
            histogram.observe(max(waited, 0.0))

    _quietly("outbox_wait", observe)


def outbox_acknowledged(producer: str, seconds: float) -> None:
    _quietly("outbox_ack", lambda: OUTBOX_ACK.labels(producer).observe(seconds))


def consumed(topic: str, outcome: str) -> None:
    _quietly("records_consumed", lambda: RECORDS.labels(topic, outcome).inc())


def reason_class(reason: str, error_type: str) -> str:
    """The bounded class of a dead letter's reason (the consumer's verdicts, `releasegate_runtime.kafka`)."""
    if error_type == "ContractError":
        return "contract"
    if reason.startswith("record cannot be decoded"):
        return "undecodable"
    if reason.startswith("gave up after"):
        return "exhausted"
    return "permanent"


def dead_lettered(topic: str, reason: str, error_type: str, destination: str) -> None:
    _quietly("dead_letters", lambda: DEAD_LETTERS.labels(topic, reason_class(reason, error_type), destination).inc())


def outbox_refused(producer: str) -> None:
    _quietly("outbox_refused", lambda: OUTBOX_REFUSED.labels(producer).inc())


def outbox_published(producer: str, rows: int) -> None:
    if rows:
        _quietly("outbox_published", lambda: OUTBOX_PUBLISHED.labels(producer).inc(rows))


def outbox_sampler(pool: asyncpg.Pool, producer: str) -> Sampler:
    """Backlog of `producer`'s outbox (the partial index on unpublished rows keeps it cheap)."""

    async def sample() -> None:
        async with pool.acquire(timeout=SAMPLE_TIMEOUT_SECONDS) as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS pending, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest"
                " FROM outbox WHERE producer = $1 AND published_at IS NULL AND refused IS NULL",
                producer,
            )
        OUTBOX_PENDING.labels(producer).set(row["pending"])
        OUTBOX_OLDEST.labels(producer).set(max(float(row["oldest"]), 0.0))

    return sample


def consumer_lag_sampler(consumers: Callable[[], list[Any]]) -> Sampler:
    """Lag of every partition assigned to the aiokafka consumers `consumers()` returns (none before they started);
    partitions no longer assigned disappear."""

    async def sample() -> None:
        lags: dict[tuple[str, str], int] = {}
        for client in consumers():
            for tp in client.assignment():
                highwater = client.highwater(tp)
                if highwater is None:  # nothing fetched from it yet
                    continue
                position = await client.position(tp)
                lags[(tp.topic, str(tp.partition))] = max(highwater - position, 0)
        CONSUMER_LAG.clear()
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(topic, partition).set(lag)

    return sample


# --- domain recording ----------------------------------------------------------------------------------------------


def verdict(verifier: str, outcome: str) -> None:
    _quietly("verdicts", lambda: VERDICTS.labels(verifier, outcome).inc())


def step_finished(kind: str, outcome: str, seconds: float) -> None:
    _quietly("step_duration", lambda: STEP_DURATION.labels(kind, outcome).observe(max(seconds, 0.0)))


def transition(service: str, state: str) -> None:
    _quietly("release_transitions", lambda: RELEASE_TRANSITIONS.labels(service, state).inc())


def breach_to_decision(environment: str, breach_at: datetime, decided_at: datetime) -> None:
    seconds = (decided_at - breach_at).total_seconds()
    _quietly("breach_to_decision", lambda: BREACH_TO_DECISION.labels(environment).observe(max(seconds, 0.0)))


def decision_to_action(
    environment: str, compensation: str, decided_at: datetime, done_at: datetime | None = None
) -> None:
    seconds = ((done_at or datetime.now(UTC)) - decided_at).total_seconds()
    _quietly(
        "decision_to_action",
        lambda: DECISION_TO_ACTION.labels(environment, compensation).observe(max(seconds, 0.0)),
    )


def traffic(service: str, environment: str, weights: Mapping[str, int]) -> None:
    """The environment's weights as last read back; versions no longer named there are dropped."""

    def record() -> None:
        for gone in _versions.get((service, environment), set()) - set(weights):
            TRAFFIC_WEIGHT.remove(service, environment, gone)
        for version, weight in weights.items():
            TRAFFIC_WEIGHT.labels(service, environment, version).set(weight)
        _versions[(service, environment)] = set(weights)

    _quietly("traffic_weight", record)


_versions: dict[tuple[str, str], set[str]] = {}
