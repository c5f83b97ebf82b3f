"""Verifiers built on the SDK against the real Kafka and PostgreSQL: one verdict per request however often it is
delivered, retries of transient errors, the deadline, requests that are not theirs, bad requests, a restart in
the middle of a window, and heartbeats in the registry."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import signal
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contracts import topics
from contracts.cloudevents import Envelope, encode
from contracts.events import DeadLetter, Verdict, VerificationRequested
from releasegate_cli.probes import TopicTail
from releasegate_platform import verifier_registry as registry
from releasegate_runtime.catch_up import CatchUpBarrier, KafkaOffsets
from releasegate_runtime.kafka import Producer, client_options
from releasegate_sdk import Measurement, Result, TransientError, VerificationRequest, Verifier
from services.verifier.adapters.store import KpiStore
from services.verifier.handlers import BusinessKpis
from tests.support.services import as_principal, register_verifier, wait_until
from tests.support.verifiers import RegistryWriter

pytestmark = pytest.mark.integration

SERVICE = f"it-sdk-{uuid.uuid4().hex[:8]}"
CORE_SERVICE = f"it-core-{uuid.uuid4().hex[:8]}"
NUDGE_SERVICE = f"it-nudge-{uuid.uuid4().hex[:8]}"
TIMEOUT = 60


@pytest.fixture(scope="module")
async def producer(settings):
    """The tests play the coordinator: the only principal that may write verification requests."""
    p = Producer(as_principal(settings, "coordinator"), "it-verifier-sdk")
    await p.start()
    yield p
    await p.stop()


@contextlib.asynccontextmanager
async def running(verifier: Verifier, settings, writer: RegistryWriter | None = None):
    """The verifier as a service in this process, until the block ends; its principal provisioned first."""
    await register_verifier(settings, verifier.name)
    if writer is not None:
        await writer.follow(verifier.name)
    stop = asyncio.Event()
    task = asyncio.create_task(verifier.serve(settings, stop=stop))
    # The verify topic holds what earlier runs and the hostile-record campaign left: a fresh group reads all of it
    # first, and a request sent meanwhile could arrive after its own deadline and be answered inconclusive. Tests
    # send theirs once the verifier has handled what the topic held at its start.
    barrier = CatchUpBarrier(
        KafkaOffsets(client_options(as_principal(settings, "admin"))),
        f"releasegate-{verifier.service_name}",
        [topics.VERIFY_COMMANDS],
        timeout=TIMEOUT,
    )
    try:
        assert await barrier.wait(), f"{verifier.service_name} did not catch up with {topics.VERIFY_COMMANDS}"
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # the service's stop handlers; give the signals back
            loop.remove_signal_handler(sig)


calls: Counter[str] = Counter()
looks: dict[str, list[bool]] = {}


async def behaviour(req: VerificationRequest) -> Result:
    """The test verifiers' check; what it does depends on the step id."""
    calls[req.release_id] += 1
    looks.setdefault(req.release_id, []).append(req.is_final_look)
    lag = Measurement("erp_export_lag_s", 12.0, threshold=60, unit="s", passed=True)
    match req.step_id:
        case "flaky" if calls[req.release_id] <= 2:
            raise TransientError("ERP API answered 503")
        case "down":
            raise TransientError("ERP API unreachable")
        case "warming" if calls[req.release_id] <= 3:  # past the 1 s window and its 1 s grace, given the backoff
            raise TransientError("no serving instance of v2 published yet")
        case "broken-export":
            return Result.failed("exports rejected by the ERP", [Measurement("erp_rejects", 7, passed=False)])
    return Result.passed("exports on time", [lag])


@pytest.fixture(scope="module")
async def verifier(settings, pool, registry_writer):
    v = Verifier(
        name=f"it-sdk-{uuid.uuid4().hex[:8]}",
        version="1.0.0",
        services=[SERVICE],
        environments=["staging", "production"],
        kpis=["erp_export_lag_s"],
        looks_every=0.5,
        grace_seconds=2,
        heartbeat_seconds=1,
    )
    v.check(behaviour)
    async with running(v, settings, registry_writer):
        yield v


def request(
    step_id: str = "pass",
    *,
    service: str = SERVICE,
    environment: str = "staging",
    window_seconds: float = 1.0,
    **fields,
) -> VerificationRequested:
    return VerificationRequested(
        release_id=f"it-{uuid.uuid4().hex[:10]}",
        step_id=step_id,
        service=service,
        environment=environment,
        candidate_version="v2",
        stable_version="v1",
        window_seconds=window_seconds,
        **{"min_samples": 1, "thresholds": {}, **fields},
    )


async def send(producer: Producer, req: VerificationRequested) -> Envelope:
    envelope = Envelope.new(req, "it-verifier-sdk", req.release_id)
    await producer.send_envelope(topics.VERIFY_COMMANDS, envelope)
    return envelope


async def verdicts(pool, verifier: Verifier, release_id: str) -> list[dict]:
    """The verdicts the verifier staged for a release (each is published once by its outbox relay)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT payload FROM outbox WHERE producer = $1 AND key = $2 AND topic = $3",
            verifier.service_name,
            release_id,
            topics.results_for(verifier.service_name),
        )
    return [json.loads(r["payload"]) for r in rows]


async def one_verdict(pool, verifier: Verifier, release_id: str) -> dict:
    found = await wait_until(lambda: verdicts(pool, verifier, release_id), TIMEOUT, f"a verdict for {release_id}")
    return found[0]


async def committed_past(settings, group: str, metadata) -> bool:
    admin = AIOKafkaAdminClient(**client_options(as_principal(settings, "admin")))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    committed = offsets.get(TopicPartition(metadata.topic, metadata.partition))
    return committed is not None and committed.offset > metadata.offset


class TestOneVerdictPerRequest:
    async def test_redelivered_request_gets_no_second_verdict(self, settings, pool, producer, verifier):
        req = request("pass")
        record = encode(Envelope.new(req, "it-verifier-sdk", req.release_id))
        await producer.send(topics.VERIFY_COMMANDS, *record)
        first = await one_verdict(pool, verifier, req.release_id)
        duplicate = await producer.send(topics.VERIFY_COMMANDS, *record)  # the same event id again
        await wait_until(
            lambda: committed_past(settings, f"releasegate-{verifier.service_name}", duplicate),
            TIMEOUT,
            "the verifier to handle the redelivery",
        )
        assert len(await verdicts(pool, verifier, req.release_id)) == 1
        assert calls[req.release_id] == 1
        assert (first["verdict"], first["verifier"], first["step_id"]) == ("pass", verifier.name, "pass")
        assert first["kpis"][0]["name"] == "erp_export_lag_s" and first["kpis"][0]["rule"] == "threshold 60 s"

    async def test_verdict_is_published_on_the_results_topic(self, settings, pool, producer, verifier):
        tail = await TopicTail(as_principal(settings, "coordinator"), topics.results_for(verifier.service_name)).start()
        try:
            req = request("pass")
            await send(producer, req)
            got = await tail.wait_for(
                lambda e: e.subject == req.release_id and e.data.verifier == verifier.name, TIMEOUT
            )
        finally:
            await tail.stop()
        assert got is not None and got.data.verdict is Verdict.PASS
        assert got.source == f"releasegate/{verifier.service_name}"


class TestDeadlines:
    async def test_transient_errors_are_retried_until_the_check_answers(self, pool, producer, verifier):
        req = request("flaky", window_seconds=2)
        await send(producer, req)
        verdict = await one_verdict(pool, verifier, req.release_id)
        assert verdict["verdict"] == "pass"
        assert calls[req.release_id] == 3

    async def test_an_unanswerable_check_is_inconclusive_at_the_deadline_naming_the_error(
        self, pool, producer, verifier
    ):
        req = request("down", window_seconds=1)
        await send(producer, req)
        verdict = await one_verdict(pool, verifier, req.release_id)
        assert verdict["verdict"] == "inconclusive"
        assert "ERP API unreachable" in verdict["reason"] and "gave up after" in verdict["reason"]
        assert calls[req.release_id] >= 2

    async def test_a_decisive_look_ends_the_window_early(self, pool, producer, verifier):
        req = request("broken-export", window_seconds=30)
        await send(producer, req)
        verdict = await one_verdict(pool, verifier, req.release_id)
        assert verdict["verdict"] == "fail" and verdict["reason"] == "exports rejected by the ERP"
        assert looks[req.release_id] == [False]  # decided at the first look, long before the window's end


class TestNewData:
    async def test_new_data_brings_the_next_look_forward(self, settings, pool, producer, registry_writer):
        """Looks every 60 s; the data the check needs arrives at once: the window is decided on its arrival."""
        arrived: set[str] = set()
        woken: list[bool] = []

        def noted(req: VerificationRequest) -> None:
            looks.setdefault(req.release_id, []).append(req.is_final_look)
            woken.append(req.woken_by_data)

        v = fails_once_arrived(arrived, noted, looks_every=60)
        async with running(v, settings, registry_writer):
            req = request("broken-export", service=NUDGE_SERVICE, window_seconds=120)
            await send(producer, req)
            arrived.add(req.release_id)

            async def verdict_after_new_data():
                v.new_data()  # what an ingest does after each stored batch; the run may not be waiting yet
                return await verdicts(pool, v, req.release_id)

            (verdict,) = await wait_until(verdict_after_new_data, TIMEOUT, "a verdict once new data arrived")
        assert verdict["verdict"] == "fail" and looks[req.release_id] == [False]
        assert woken == [True], "the check was not told its look was woken by new data"
        opened, decided = (datetime.fromisoformat(verdict[k]) for k in ("window_start", "window_end"))
        assert (decided - opened).total_seconds() < 60, "decided before the first tick of its looks"

    async def test_data_that_came_during_the_gap_is_looked_at_when_the_gap_ends(
        self, settings, pool, producer, registry_writer
    ):
        """A look, then one arrival while the gap after it runs: the next look comes at the gap's end, not at the
        next arrival (there is none here) nor at the tick two minutes on."""
        arrived: set[str] = set()
        looked = asyncio.Event()
        v = fails_once_arrived(arrived, lambda _req: looked.set(), looks_every=120, data_look_gap=1.0)
        async with running(v, settings, registry_writer):
            req = request("broken-export", service=NUDGE_SERVICE, window_seconds=240)
            await send(producer, req)

            async def first_look() -> bool:
                v.new_data()  # until the run waits for data and looks
                return looked.is_set()

            await wait_until(first_look, TIMEOUT, "the first look, woken by data")
            arrived.add(req.release_id)
            v.new_data()  # the one arrival, within the gap after that look
            (verdict,) = await wait_until(
                lambda: verdicts(pool, v, req.release_id), TIMEOUT, "a verdict at the end of the gap"
            )
        assert verdict["verdict"] == "fail"
        opened, decided = (datetime.fromisoformat(verdict[k]) for k in ("window_start", "window_end"))
        assert (decided - opened).total_seconds() < 120, "decided only at the tick of its looks"


def fails_once_arrived(arrived: set[str], noted: Callable[[VerificationRequest], object], **options: float) -> Verifier:
    """A verifier of NUDGE_SERVICE (not the module verifier's: only it judges the request) whose check waits for
    an ERP export and fails once its release is in `arrived`; `noted` sees every look."""

    async def judged_on_data(req: VerificationRequest) -> Result:
        noted(req)
        if req.release_id in arrived:
            return Result.failed("exports rejected by the ERP", [Measurement("erp_rejects", 7, passed=False)])
        return Result.pending("no export seen yet")

    v = Verifier(
        name=f"it-nudge-{uuid.uuid4().hex[:8]}",
        version="1.0.0",
        services=[NUDGE_SERVICE],
        heartbeat_seconds=1,
        **options,
    )
    v.check(judged_on_data)
    return v


def sent_ago(req: VerificationRequested, seconds: float) -> Envelope:
    """The request as the coordinator sent it `seconds` ago: what a verifier that was down meanwhile reads."""
    envelope = Envelope.new(req, "it-verifier-sdk", req.release_id)
    return dataclasses.replace(envelope, time=envelope.time - timedelta(seconds=seconds))


def lateness(reason: str) -> float:
    found = re.search(r"arrived ([0-9.]+)s after its verdict was due", reason)
    assert found, reason
    return float(found.group(1))


@pytest.fixture(scope="module")
async def previewer(settings, registry_writer):
    """A verifier that runs previews (synthetic journeys), as the core verifier does."""
    v = Verifier(
        name=f"it-preview-{uuid.uuid4().hex[:8]}",
        version="1.0.0",
        services=[SERVICE],
        handles_synthetic=True,
        grace_seconds=2,
        heartbeat_seconds=1,
    )
    v.check(behaviour)
    async with running(v, settings, registry_writer):
        yield v


class TestLateRequests:
    """A request read after its verdict was due: the verifier was down, or its group rebalancing, when it came."""

    async def test_a_late_request_is_answered_inconclusive_at_once_naming_why_and_only_once(
        self, settings, pool, producer, verifier
    ):
        req = request("pass", window_seconds=1.0)  # due 1 s + 1 s grace after it was sent
        record = encode(sent_ago(req, 30))
        await producer.send(topics.VERIFY_COMMANDS, *record)
        first = await one_verdict(pool, verifier, req.release_id)
        duplicate = await producer.send(topics.VERIFY_COMMANDS, *record)
        await wait_until(
            lambda: committed_past(settings, f"releasegate-{verifier.service_name}", duplicate),
            TIMEOUT,
            "the verifier to handle the redelivery",
        )
        assert first["verdict"] == "inconclusive" and first["verifier"] == verifier.name
        assert 28 <= lateness(first["reason"]) < 28 + TIMEOUT and "nothing was judged" in first["reason"]
        assert calls[req.release_id] == 0  # the check never looked at a window it could not judge as asked
        assert len(await verdicts(pool, verifier, req.release_id)) == 1
        async with pool.acquire() as conn:
            run = await conn.fetchrow(
                "SELECT finished_at, verdict FROM verifier_runs WHERE verifier = $1 AND release_id = $2",
                verifier.name,
                req.release_id,
            )
        assert run["finished_at"] is not None and run["verdict"]["verdict"] == "inconclusive"

    async def test_a_preview_read_late_is_still_run_while_the_coordinator_waits(self, pool, producer, previewer):
        synthetic = {"journey": "checkout", "tenants": ["acme"], "profiles": ["visa"]}
        req = request("verify-preview", window_seconds=1.0, synthetic=synthetic)
        await producer.send(topics.VERIFY_COMMANDS, *encode(sent_ago(req, 20)))
        verdict = await one_verdict(pool, previewer, req.release_id)
        assert (verdict["verdict"], verdict["reason"]) == ("pass", "exports on time")
        assert calls[req.release_id] == 1

    async def test_a_preview_whose_candidate_is_not_reachable_yet_is_retried_past_its_short_window(
        self, pool, producer, previewer
    ):
        synthetic = {"journey": "checkout", "tenants": ["acme"], "profiles": ["visa"]}
        req = request("warming", window_seconds=1.0, synthetic=synthetic)
        await send(producer, req)
        verdict = await one_verdict(pool, previewer, req.release_id)
        assert (verdict["verdict"], verdict["reason"]) == ("pass", "exports on time")
        assert calls[req.release_id] == 4

    async def test_a_preview_read_after_the_coordinator_stopped_waiting_is_inconclusive(
        self, pool, producer, previewer
    ):
        synthetic = {"journey": "checkout", "tenants": ["acme"], "profiles": ["visa"]}
        req = request("verify-preview", window_seconds=1.0, synthetic=synthetic)
        await producer.send(topics.VERIFY_COMMANDS, *encode(sent_ago(req, 75)))
        verdict = await one_verdict(pool, previewer, req.release_id)
        assert verdict["verdict"] == "inconclusive" and 15 <= lateness(verdict["reason"]) < 15 + TIMEOUT
        assert calls[req.release_id] == 0


class TestRequestsThatAreNotForIt:
    async def test_other_services_environments_and_synthetic_journeys_are_skipped(
        self, settings, pool, producer, verifier
    ):
        synthetic = {"journey": "checkout", "tenants": ["acme"], "profiles": ["visa"]}
        skipped = [
            request(service=f"it-other-{uuid.uuid4().hex[:6]}"),
            request(environment="qa"),
            request(synthetic=synthetic),
        ]
        sent = []
        for req in skipped:
            envelope = Envelope.new(req, "it-verifier-sdk", req.release_id)
            sent.append(await producer.send(topics.VERIFY_COMMANDS, *encode(envelope)))
        ours = request("pass")
        await send(producer, ours)
        assert (await one_verdict(pool, verifier, ours.release_id))["verdict"] == "pass"
        group = f"releasegate-{verifier.service_name}"
        for metadata in sent:
            await wait_until(
                lambda m=metadata: committed_past(settings, group, m), TIMEOUT, "the skipped request to be acknowledged"
            )
        async with pool.acquire() as conn:
            runs = await conn.fetchval(
                "SELECT count(*) FROM verifier_runs WHERE verifier = $1 AND release_id = ANY($2::text[])",
                verifier.name,
                [r.release_id for r in skipped],
            )
        assert runs == 0
        for req in skipped:
            assert await verdicts(pool, verifier, req.release_id) == []
            assert calls[req.release_id] == 0


class TestBadRequests:
    @pytest.mark.parametrize(
        "ce_type,value,reason",
        [
            (VerificationRequested.event_type, b'{"release_id": "x", "step_id"', "not valid JSON"),
            ("dev.releasegate.verification.requested.v2", b"{}", "unknown event type or schema version"),
            (VerificationRequested.event_type, b'{"release_id": "x"}', "does not match its schema"),
        ],
    )
    async def test_malformed_request_is_dead_lettered_with_the_reason(
        self, settings, producer, verifier, ce_type, value, reason
    ):
        key = f"bad-{uuid.uuid4().hex[:8]}"
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", key.encode()),
            ("ce_source", b"it"),
            ("ce_type", ce_type.encode()),
        ]
        tail = await TopicTail(as_principal(settings, "ops"), topics.DEADLETTER).start()
        consumer = f"releasegate-{verifier.service_name}"
        try:
            await producer.send(topics.VERIFY_COMMANDS, key.encode(), value, headers)
            letter = await tail.wait_for(
                lambda e: isinstance(e.data, DeadLetter) and e.data.key == key and e.data.consumer == consumer, TIMEOUT
            )
        finally:
            await tail.stop()
        assert letter is not None, "no dead letter"
        assert reason in letter.data.reason and letter.data.source_topic == topics.VERIFY_COMMANDS


class TestRestart:
    async def test_a_restarted_verifier_resumes_the_window_and_answers_once(
        self, settings, pool, producer, registry_writer
    ):
        service = f"it-sdk-restart-{uuid.uuid4().hex[:6]}"  # not the module verifier's service
        v = Verifier(name=service, version="1.0.0", services=[service], grace_seconds=5)
        v.check(behaviour)
        req = request("pass", service=service, window_seconds=8)

        async def open_run():
            async with pool.acquire() as conn:
                return await conn.fetchrow(
                    "SELECT started_at, finished_at FROM verifier_runs WHERE verifier = $1 AND release_id = $2",
                    v.name,
                    req.release_id,
                )

        async with running(v, settings):
            await send(producer, req)
            before = await wait_until(open_run, TIMEOUT, "the request to be accepted")
        assert before["finished_at"] is None and calls[req.release_id] == 0
        async with running(v, settings):
            verdict = await one_verdict(pool, v, req.release_id)
        assert verdict["verdict"] == "pass"
        assert datetime.fromisoformat(verdict["window_start"]) == before["started_at"]
        assert looks[req.release_id] == [True] and len(await verdicts(pool, v, req.release_id)) == 1


class TestHeartbeats:
    async def test_heartbeats_put_the_verifier_in_the_registry_as_alive(self, pool, verifier):
        async def alive():
            async with pool.acquire() as conn:
                return (await registry.alive_verifiers(conn, datetime.now(UTC))).get(verifier.name)

        assert await wait_until(alive, TIMEOUT, "the verifier to be alive in the registry") == {SERVICE}
        async with pool.acquire() as conn:
            status = next(s for s in await registry.statuses(conn, datetime.now(UTC)) if s.name == verifier.name)
        assert (status.alive, status.alive_instances, status.versions, status.kpis) == (
            True,
            1,
            ["1.0.0"],
            ["erp_export_lag_s"],
        )


@pytest.fixture(scope="module")
async def core(settings, pool):
    """The core verifier's check on the SDK, with business events always ingested (no shop traffic needed)."""
    v = Verifier(
        name=CORE_SERVICE, version="1", services=[CORE_SERVICE], environments=["*"], looks_every=0.5, grace_seconds=3
    )

    @v.on_startup
    async def wire(rt) -> None:
        v.check(BusinessKpis(KpiStore(rt.pool), lambda: datetime.now(UTC)).check)

    async with running(v, settings):
        yield v


async def judged(pool, producer, core: Verifier, candidate_type: str) -> dict:
    """The verdict on a candidate whose 30 checkouts are all of `candidate_type`, next to a healthy stable."""
    environment = f"it-env-{uuid.uuid4().hex[:8]}"
    req = request(
        "verify-production",
        service=CORE_SERVICE,
        environment=environment,
        window_seconds=3,
        min_samples=15,
        thresholds={"checkout_success_rate": {"min": 0.85}},
    )
    await send(producer, req)

    async def accepted():
        async with pool.acquire() as conn:
            return await conn.fetchval(
                "SELECT 1 FROM verifier_runs WHERE verifier = $1 AND release_id = $2", core.name, req.release_id
            )

    await wait_until(accepted, TIMEOUT, "the request to be accepted")
    now = datetime.now(UTC)
    rows = [
        (uuid.uuid4().hex, type_, environment, version, "acme", now, None, 20.0)
        for version, type_ in (("v1", "shop.checkout.succeeded.v1"), ("v2", candidate_type))
        for _ in range(30)
    ]
    await KpiStore(pool).add_business_events(rows)
    return await one_verdict(pool, core, req.release_id)


class TestCoreVerifierOnTheSdk:
    async def test_a_broken_candidate_fails_as_soon_as_the_guardrail_is_clearly_violated(self, pool, producer, core):
        verdict = await judged(pool, producer, core, "shop.checkout.failed.v1")
        assert verdict["verdict"] == "fail" and "checkout_success_rate" in verdict["reason"]
        assert verdict["verifier"] == core.name
        kpi = next(k for k in verdict["kpis"] if k["name"] == "checkout_success_rate")
        assert (kpi["candidate"], kpi["candidate_samples"], kpi["baseline"]) == (0.0, 30, 1.0)

    async def test_a_healthy_candidate_passes_at_the_end_of_the_window(self, pool, producer, core):
        verdict = await judged(pool, producer, core, "shop.checkout.succeeded.v1")
        assert verdict["verdict"] == "pass" and verdict["reason"].startswith("all KPIs within bounds")
        start, end = (datetime.fromisoformat(verdict[k]) for k in ("window_start", "window_end"))
        assert (end - start).total_seconds() >= 3
