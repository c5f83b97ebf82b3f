"""releasegate's own metrics: the registry renders in Prometheus' text format, the consumer's counters move as
records are handled, refused, retried and dead-lettered, recording never breaks the consumer, samplers are
bounded in time, and no label ever carries a release id."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from aiokafka import TopicPartition
from faststream.kafka import KafkaBroker, TestKafkaBroker
from prometheus_client.parser import text_string_to_metric_families

from contracts import topics
from contracts.cloudevents import Envelope, encode
from contracts.events import Verdict
from releasegate_runtime import kafka, metrics
from releasegate_runtime.kafka import Consumer, PermanentError
from services.coordinator import saga as domain
from services.coordinator.metrics import DecisionMetrics
from tests.support.consumers import alert, record, valid_record
from tests.support.saga import ENTRY, NOW, answer, candidate, run_until

TOPIC = topics.ALERTS
# every label name a releasegate metric may have: each has a bounded set of values
BOUNDED_LABELS = {
    "component", "version", "topic", "outcome", "reason_class", "destination", "producer", "partition", "sampler",
    "state", "service", "step_kind", "kind", "verifier", "environment", "compensation",
    "group",  # a service's consumer group: one per service
}  # fmt: skip


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch):
    monkeypatch.setattr(kafka, "_retry_delay", lambda attempt: 0)


class FakeProducer:
    """Takes dead letters, or fails as a broker that refuses them."""

    def __init__(self, failure: BaseException | None = None) -> None:
        self.sent: list[tuple[str, Envelope]] = []
        self.failure = failure

    async def send_envelope(self, topic: str, envelope: Envelope) -> None:
        if self.failure is not None:
            raise self.failure
        self.sent.append((topic, envelope))

    def letters(self) -> list:
        return [e.data for t, e in self.sent if t == topics.DEADLETTER]


class FakeParking:
    """parked_records with its primary key."""

    def __init__(self) -> None:
        self.parked: set[tuple] = set()

    @asynccontextmanager
    async def acquire(self, timeout: float | None = None):
        yield self

    async def fetchrow(self, sql: str, *args, timeout: float | None = None):
        key = tuple(args[:4])
        if key in self.parked:
            return None
        self.parked.add(key)
        return {"?column?": 1}


class Handler:
    def __init__(self, failure: BaseException | None = None) -> None:
        self.calls, self.failure = 0, failure

    async def __call__(self, envelope: Envelope) -> None:
        self.calls += 1
        if self.failure is not None:
            raise self.failure


def consumer(producer: FakeProducer, pool: FakeParking | None = None) -> Consumer:
    return Consumer(
        KafkaBroker("127.0.0.1:1", logger=None), "releasegate-test", producer, "test", pool or FakeParking()
    )


@pytest.fixture(autouse=True)
def no_samplers():
    metrics.clear_samplers()
    yield
    metrics.clear_samplers()


class TestTheRegistry:
    async def test_it_renders_in_prometheus_text_format_with_the_process_named(self):
        metrics.configure("gatekeeper")  # e.g. another runtime started in this process before
        metrics.configure("coordinator")
        families = {f.name: f for f in text_string_to_metric_families((await metrics.render()).decode())}
        (info,) = families["releasegate_build_info"].samples
        assert info.labels["component"] == "coordinator" and info.value == 1
        for name in ("releasegate_records_consumed", "releasegate_handler_duration_seconds", "releasegate_releases"):
            assert name in families
        assert metrics.CONTENT_TYPE.startswith("text/plain; version=")

    def test_every_label_is_one_with_bounded_values(self):
        names = {label for m in metrics.REGISTRY.collect() for s in m.samples for label in s.labels if label != "le"}
        described = {label for c in metrics.REGISTRY._collector_to_names for label in getattr(c, "_labelnames", ())}
        assert described <= BOUNDED_LABELS and names <= BOUNDED_LABELS
        assert "release_id" not in described


class TestTheConsumerCounts:
    async def test_a_handled_record_counts_ok_and_its_handler_time(self):
        ok, timed = (
            value("releasegate_records_consumed_total", topic=TOPIC, outcome="ok"),
            value("releasegate_handler_duration_seconds_count", topic=TOPIC),
        )
        handler = Handler()
        await consumer(FakeProducer(), FakeParking())._handle(valid_record(), handler, None)
        assert handler.calls == 1
        assert value("releasegate_records_consumed_total", topic=TOPIC, outcome="ok") == ok + 1
        assert value("releasegate_handler_duration_seconds_count", topic=TOPIC) == timed + 1

    async def test_a_record_through_the_broker_is_counted_once(self):
        ok = value("releasegate_records_consumed_total", topic=TOPIC, outcome="ok")
        handler = Handler()
        c = consumer(FakeProducer(), FakeParking())
        c.subscribe(TOPIC, handler)
        c.register()

        key, body, headers = encode(alert())
        async with TestKafkaBroker(c._broker) as broker:
            await broker.publish(body, TOPIC, key=key, headers={k: v.decode() for k, v in headers})
        assert handler.calls == 1
        assert value("releasegate_records_consumed_total", topic=TOPIC, outcome="ok") == ok + 1

    async def test_a_contract_violation_is_refused_and_dead_lettered_as_such(self):
        refused = value("releasegate_records_consumed_total", topic=TOPIC, outcome="refused")
        letters = value("releasegate_dead_letters_total", topic=TOPIC, reason_class="contract", destination="topic")
        producer = FakeProducer()
        await consumer(producer, FakeParking())._handle(record(b"{}", [("ce_type", b"nope")]), Handler(), None)
        assert len(producer.letters()) == 1
        assert value("releasegate_records_consumed_total", topic=TOPIC, outcome="refused") == refused + 1
        assert (
            value("releasegate_dead_letters_total", topic=TOPIC, reason_class="contract", destination="topic")
            == letters + 1
        )

    async def test_a_permanent_error_is_refused_and_a_dead_letter_the_broker_refuses_is_counted_as_parked(self):
        parked = value("releasegate_dead_letters_total", topic=TOPIC, reason_class="permanent", destination="parked")
        pool = FakeParking()
        await consumer(FakeProducer(failure=OSError("broker gone")), pool)._handle(
            valid_record(offset=11), Handler(PermanentError("bad reference")), None
        )
        assert pool.parked
        assert (
            value("releasegate_dead_letters_total", topic=TOPIC, reason_class="permanent", destination="parked")
            == parked + 1
        )

    async def test_transient_failures_count_as_retries_until_the_record_is_given_up(self):
        retried = value("releasegate_records_consumed_total", topic=TOPIC, outcome="retried")
        given_up = value("releasegate_records_consumed_total", topic=TOPIC, outcome="dead_lettered")
        exhausted = value("releasegate_dead_letters_total", topic=TOPIC, reason_class="exhausted", destination="topic")
        handler, producer = Handler(RuntimeError("database blip")), FakeProducer()
        c = consumer(producer, FakeParking())
        for _ in range(kafka.MAX_ATTEMPTS - 1):
            with pytest.raises(RuntimeError):
                await c._handle(valid_record(offset=21), handler, None)
        await c._handle(valid_record(offset=21), handler, None)
        assert handler.calls == kafka.MAX_ATTEMPTS and len(producer.letters()) == 1
        assert value("releasegate_records_consumed_total", topic=TOPIC, outcome="retried") == retried + 4
        assert value("releasegate_records_consumed_total", topic=TOPIC, outcome="dead_lettered") == given_up + 1
        assert (
            value("releasegate_dead_letters_total", topic=TOPIC, reason_class="exhausted", destination="topic")
            == exhausted + 1
        )

    async def test_a_metric_that_cannot_be_recorded_never_reaches_the_consumer(self, monkeypatch):
        def broken(*labels):
            raise ValueError("registry broken")

        monkeypatch.setattr(metrics.RECORDS, "labels", broken)
        monkeypatch.setattr(metrics.HANDLER_DURATION, "labels", broken)
        handler = Handler()
        await consumer(FakeProducer(), FakeParking())._handle(valid_record(offset=31), handler, None)
        assert handler.calls == 1


class FakeKafkaConsumer:
    def __init__(self, assigned: dict[TopicPartition, tuple[int | None, int]]) -> None:
        self._assigned = assigned

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._assigned[tp][0]

    async def position(self, tp: TopicPartition) -> int:
        return self._assigned[tp][1]


class FakeOutbox:
    def __init__(self, pending: int, oldest: float) -> None:
        self.row = {"pending": pending, "oldest": oldest}
        self.asked: list[tuple] = []

    @asynccontextmanager
    async def acquire(self, timeout: float | None = None):
        yield self

    async def fetchrow(self, sql: str, *args):
        self.asked.append((sql, args))
        return self.row


class TestSamplers:
    async def test_consumer_lag_is_the_distance_to_the_high_watermark_of_each_assigned_partition(self):
        lagging, fresh = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
        client = FakeKafkaConsumer({lagging: (120, 100), fresh: (None, 0)})
        metrics.add_sampler("consumer_lag", metrics.consumer_lag_sampler(lambda: [client]))
        await metrics.render()
        assert value("releasegate_consumer_lag_records", topic=TOPIC, partition="0") == 20
        assert (
            metrics.REGISTRY.get_sample_value("releasegate_consumer_lag_records", {"topic": TOPIC, "partition": "1"})
            is None
        )
        client._assigned = {}  # the partition moved to another group member
        await metrics.render()
        assert (
            metrics.REGISTRY.get_sample_value("releasegate_consumer_lag_records", {"topic": TOPIC, "partition": "0"})
            is None
        )

    async def test_the_outbox_backlog_is_read_for_the_process_producer_only(self):
        pool = FakeOutbox(pending=7, oldest=42.5)
        metrics.add_sampler("outbox", metrics.outbox_sampler(pool, "deployer"))
        await metrics.render()
        assert value("releasegate_outbox_pending_rows", producer="deployer") == 7
        assert value("releasegate_outbox_oldest_pending_age_seconds", producer="deployer") == 42.5
        ((sql, args),) = pool.asked
        assert "published_at IS NULL" in sql and args == ("deployer",)

    async def test_a_sampler_that_fails_or_hangs_costs_its_gauges_not_the_scrape(self, monkeypatch):
        monkeypatch.setattr(metrics, "SAMPLE_TIMEOUT_SECONDS", 0.05)

        async def hangs() -> None:
            await asyncio.Event().wait()

        async def fails() -> None:
            raise OSError("PostgreSQL is down")

        before = value("releasegate_metrics_sample_errors_total", sampler="hangs")
        metrics.add_sampler("hangs", hangs)
        metrics.add_sampler("fails", fails)
        body = (await metrics.render()).decode()
        assert "releasegate_build_info" in body
        assert value("releasegate_metrics_sample_errors_total", sampler="hangs") == before + 1
        assert value("releasegate_metrics_sample_errors_total", sampler="fails") >= 1


class TestTheCoordinatorsMetrics:
    """On the saga's own decisions, as the coordinator's handler passes them once committed."""

    def test_a_promoted_release_times_each_step_and_leaves_the_traffic_it_read_back(self):
        observer, now = DecisionMetrics(), NOW
        before = {
            k: value("releasegate_step_duration_seconds_count", kind=k, outcome="passed")
            for k in ("gate", "dr", "deploy", "verify")
        }
        promoted = value("releasegate_release_transitions_total", service="shop", state="promoted")
        started = domain.start(candidate(release_id="rel-metrics-1"), ENTRY, now, {})
        observer.decided(None, started, None, None, now)
        saga = started.saga
        while not saga.state.terminal:
            now += timedelta(seconds=3)
            event = answer(saga)
            decision = domain.handle(saga, event, now)
            observer.decided(saga, decision, event, now, now)
            saga = decision.saga
        assert saga.state.value == "promoted"
        for kind, count in before.items():
            assert value("releasegate_step_duration_seconds_count", kind=kind, outcome="passed") > count, kind
        assert value("releasegate_release_transitions_total", service="shop", state="promoted") == promoted + 1
        assert value("releasegate_traffic_weight", service="shop", environment="production", version="v2") == 100

    async def test_no_release_id_becomes_a_label_value(self):
        self.test_a_promoted_release_times_each_step_and_leaves_the_traffic_it_read_back()
        assert "rel-metrics-1" not in (await metrics.render()).decode()

    def test_a_failing_verdict_times_the_breach_to_the_rollback_decision(self):
        seen = value("releasegate_breach_to_decision_seconds_count", environment="production")
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-canary-10")
        failing = answer(saga, ok=False, verdict=Verdict.FAIL)
        decided_at = NOW + timedelta(seconds=2)
        decision = domain.handle(saga, failing, decided_at)
        DecisionMetrics().decided(saga, decision, failing, NOW, decided_at)
        assert decision.saga.state.value == "rolling_back"
        assert value("releasegate_breach_to_decision_seconds_count", environment="production") == seen + 1
        assert value("releasegate_breach_to_decision_seconds_sum", environment="production") >= 2

    def test_a_passing_verdict_is_no_breach(self):
        seen = value("releasegate_breach_to_decision_seconds_count", environment="production")
        saga = run_until(domain.start(candidate(), ENTRY, NOW, {}).saga, "verify-canary-10")
        passing = answer(saga)
        DecisionMetrics().decided(saga, domain.handle(saga, passing, NOW), passing, NOW, NOW)
        assert value("releasegate_breach_to_decision_seconds_count", environment="production") == seen

    def test_the_traffic_gauge_forgets_versions_that_no_longer_serve(self):
        metrics.traffic("svc-t", "production", {"v1": 90, "v2": 10})
        metrics.traffic("svc-t", "production", {"v1": 100})
        assert value("releasegate_traffic_weight", service="svc-t", environment="production", version="v1") == 100
        labels = {"service": "svc-t", "environment": "production", "version": "v2"}
        assert metrics.REGISTRY.get_sample_value("releasegate_traffic_weight", labels) is None

    def test_recording_a_decision_never_raises(self):
        DecisionMetrics().decided(None, object(), None, None, NOW)  # type: ignore[arg-type]
