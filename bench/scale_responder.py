"""The workload of the scale benchmark (bench/scale.py): one asyncio process that plays the gatekeeper, the
dr-checker, the deployer, the rollback service and the verifiers of the benchmark's catalog entry, answering every
command of the benchmark's releases at once, so what is measured is the control plane (the coordinator, Kafka,
PostgreSQL) and not a workload.

Each role reads its command topic and writes its own result topic as its own Kafka principal (deploy/kafka/acls.yaml),
with the credentials the real service uses; deploy and compensation commands are answered only if their step grant
verifies against the coordinator's public key, as the real deployer and rollback service require. Results are the
events the real services send (contracts/events.py), each passing. Only the releases whose id starts with `--prefix`
are answered. Prints `ready` once every consumer is at the end of its topic; on SIGTERM it stops, first committing
the end of every command topic for the real services' consumer groups, so the regular services, started again,
do not take up the benchmark's commands.

For the chaos soak (bench/chaos.py), which SIGKILLs it: `--durable` commits what it answered after every batch
(at least once: a command answered just before a kill is answered again after the restart, as a real service's
redelivered record would be) and `--resume` starts from those commits instead of the end. Release ids name the
outcome the soak wants: with `--fail-marker`, production verifications fail (a bad release, rolled back); with
`--stateful-marker`, the gate reports a data-rewriting migration (the plan gains a backup point and migrations,
and a rollback restores data).

Release ids may also ask for a step duration: one containing `-pace<ms>-` has each command answered after a
random delay around that many milliseconds (uniform between half and one and a half times it), as a workload whose
steps take time would; the scale benchmark uses it to offer a fixed load whatever the number of releases.

    python -m bench.scale_responder --prefix scale-bench- --catalog-dir DIR [--service S ...]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import signal
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts import topics
from contracts.cloudevents import Envelope, decode, encode
from contracts.events import (
    BackupPoint,
    CheckResult,
    Contract,
    DeployAction,
    DeployFinished,
    DeployRequested,
    DRCheckFinished,
    DRCheckRequested,
    GateCheckFinished,
    GateCheckRequested,
    KpiResult,
    ObservedState,
    RollbackFinished,
    RollbackRequested,
    Verdict,
    VerificationFinished,
    VerificationRequested,
    VerifierHeartbeat,
)
from releasegate_platform.catalog import Catalog
from releasegate_runtime import grants
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings

WORKERS = {
    topics.GATE_COMMANDS: "gatekeeper",
    topics.DR_COMMANDS: "dr-checker",
    topics.DEPLOY_COMMANDS: "deployer",
    topics.ROLLBACK_COMMANDS: "rollback",
}
PACE = re.compile(r"-pace(\d{1,6})-")
HEARTBEAT_SECONDS = 5.0  # the SDK's default (releasegate_sdk/verifier.py)
STABLE = "v1"  # the version the benchmark's environments fall back to (there are none: nothing is deployed)


def now() -> datetime:
    return datetime.now(UTC)


# what a stateful release's gate reports (bench/chaos.py): one migration that rewrites data, so that production
# takes a backup point before migrating and a rollback restores the data
MIGRATIONS = [{"name": "0042_reprice_catalog", "kind": "expand", "rewrites_data": True}]


def gate_passed(cmd: GateCheckRequested, stateful: bool = False) -> GateCheckFinished:
    return GateCheckFinished(
        release_id=cmd.release_id,
        step_id=cmd.step_id,
        environment=cmd.environment,
        passed=True,
        decision="pass",
        risk="low",
        checks=[CheckResult(name="benchmark", passed=True, reason="answered at once by the scale benchmark")],
        migrations=MIGRATIONS if stateful else [],
        requires=["dr-check"] if stateful else [],
    )


def dr_ready(cmd: DRCheckRequested) -> DRCheckFinished:
    backup = None
    if cmd.action == "backup-point":  # a backup recorded, never taken: nothing is restored from it here
        backup = BackupPoint(
            backup_id=1,
            database=cmd.database,
            path="/nonexistent/bench-backup-point.dump",
            sha256="sha256:" + "0" * 64,
            bytes=0,
            kind="backup-point",
            taken_at=now(),
            release_id=cmd.release_id,
        )
    evidence = {"backup_id": 1} if backup else {}
    return DRCheckFinished(
        release_id=cmd.release_id,
        step_id=cmd.step_id,
        ready=True,
        checks=[
            CheckResult(
                name="benchmark", passed=True, reason="answered at once by the scale benchmark", evidence=evidence
            )
        ],
        backup_point=backup,
    )


def deployed(cmd: DeployRequested) -> DeployFinished:
    weight = 100 if cmd.action is DeployAction.FINALIZE else cmd.weight
    weights = {cmd.version: weight} | ({STABLE: 100 - weight} if weight < 100 else {})
    return DeployFinished(
        release_id=cmd.release_id,
        step_id=cmd.step_id,
        environment=cmd.environment,
        succeeded=True,
        reason=f"{cmd.action.value} answered at once by the scale benchmark",
        observed=ObservedState(
            weights=weights,
            stable_version=cmd.version if cmd.action is DeployAction.FINALIZE else STABLE,
            tenants_on_candidate=list(cmd.tenants or []),
        ),
    )


def rolled_back(cmd: RollbackRequested) -> RollbackFinished:
    return RollbackFinished(
        release_id=cmd.release_id,
        step_id=cmd.step_id,
        environment=cmd.environment,
        succeeded=True,
        reason=f"{cmd.compensation} answered at once by the scale benchmark",
        observed=ObservedState(weights={STABLE: 100}, stable_version=STABLE),
    )


def verdict(cmd: VerificationRequested, verifier: str, fail: bool = False) -> VerificationFinished:
    at = now()
    return VerificationFinished(
        release_id=cmd.release_id,
        step_id=cmd.step_id,
        environment=cmd.environment,
        verdict=Verdict.FAIL if fail else Verdict.PASS,
        reason="the benchmark's bad release fails here" if fail else "answered at once by the scale benchmark",
        kpis=[
            KpiResult(
                name="benchmark",
                candidate=1.0,
                baseline=1.0,
                candidate_samples=cmd.min_samples,
                baseline_samples=cmd.min_samples,
                verdict=Verdict.FAIL if fail else Verdict.PASS,
                rule="answered at once",
            )
        ],
        window_start=at,
        window_end=at,
        verifier=verifier,
    )


@dataclass(frozen=True)
class Behaviour:
    """How the responder answers beyond "at once, passing" (bench/chaos.py)."""

    durable: bool = False  # commit what was answered after every batch
    resume: bool = False  # start from the commits, not the end
    fail_marker: str | None = None  # release ids containing it fail their production verifications
    stateful_marker: str | None = None  # release ids containing it report a data-rewriting migration at the gate


class Responder:
    def __init__(
        self,
        settings: ServiceSettings,
        prefix: str,
        catalog: Catalog,
        services: list[str],
        heartbeat_seconds: float,
        behaviour: Behaviour | None = None,
    ) -> None:
        self._settings, self._prefix, self._heartbeat_seconds = settings, prefix, heartbeat_seconds
        self._behaviour = behaviour or Behaviour()
        # who answers a verification in each environment: the entries' required and advisory verifiers, as the
        # real ones (each covering its environments) would
        self._verifiers: dict[str, list[str]] = {}
        for entry in (catalog.get(service) for service in services):
            for env in entry.environments:
                chosen = entry.verification.verifiers(env)
                self._verifiers[env] = sorted({*self._verifiers.get(env, []), *chosen.required, *chosen.advisory})
        self._names = sorted({v for vs in self._verifiers.values() for v in vs})
        key_file = settings.coordinator_public_key_file or settings.secrets_dir / "keys" / "coordinator.pub.json"
        self._grant_key = grants.load_grant_key(key_file)
        self._services = services
        self._producers: dict[str, AIOKafkaProducer] = {}
        self._consumers: dict[str, AIOKafkaConsumer] = {}  # command topic → consumer
        self._instance = uuid.uuid4().hex[:12]
        self._later: set[asyncio.Task[None]] = set()  # answers waiting out their release's pace
        self._rng = random.Random()
        self.counts: Counter[str] = Counter()

    def _as(self, principal: str) -> dict:
        return client_options(self._settings.model_copy(update={"principal": principal}))

    async def start(self) -> None:
        for principal in [*WORKERS.values(), *(f"verifier-{n}" for n in self._names)]:
            producer = AIOKafkaProducer(**self._as(principal), acks="all", enable_idempotence=True, linger_ms=0)
            await producer.start()
            self._producers[principal] = producer
        # the verification requests are read once, as the core verifier; every verifier of the entry answers them
        readers = {**WORKERS, topics.VERIFY_COMMANDS: "verifier-business-kpis"}
        for topic, principal in readers.items():
            consumer = AIOKafkaConsumer(
                **self._as(principal), group_id=f"releasegate-{principal}", enable_auto_commit=False
            )
            await consumer.start()
            consumer.assign(
                [TopicPartition(topic, p) for p in sorted(await self._producers[principal].partitions_for(topic))]
            )
            await consumer.seek_to_end()
            for tp in consumer.assignment():
                committed = await consumer.committed(tp) if self._behaviour.resume else None
                if committed is not None:
                    consumer.seek(tp, committed)  # what the killed responder had not answered yet is answered now
                await consumer.position(tp)  # resolve the end now: commands sent after `ready` are all seen
            if self._behaviour.durable:  # a kill before the first batch resumes from here, not from older commits
                await consumer.commit({tp: await consumer.position(tp) for tp in consumer.assignment()})
            self._consumers[topic] = consumer

    async def heartbeats(self) -> None:
        while True:
            for name in self._names:
                hb = VerifierHeartbeat(
                    name=name,
                    version="scale-bench",
                    instance=self._instance,
                    services=list(self._services),
                    environments=["*"],
                    interval_seconds=self._heartbeat_seconds,
                    sent_at=now(),
                )
                principal = f"verifier-{name}"
                await self._send(principal, Envelope.new(hb, f"releasegate/{principal}/{self._instance}", subject=name))
            await asyncio.sleep(self._heartbeat_seconds)

    async def _send(self, principal: str, envelope: Envelope) -> asyncio.Future:
        key, value, headers = encode(envelope)
        return await self._producers[principal].send(
            topics.results_for(principal), value=value, key=key, headers=headers
        )

    def _answers(self, topic: str, envelope: Envelope) -> list[tuple[str, Contract]]:
        cmd = envelope.data
        match cmd:
            case GateCheckRequested():
                marker = self._behaviour.stateful_marker
                return [("gatekeeper", gate_passed(cmd, stateful=bool(marker) and marker in cmd.release_id))]
            case DRCheckRequested():
                return [("dr-checker", dr_ready(cmd))]
            case DeployRequested() | RollbackRequested():
                refusal = grants.verify_grant(self._grant_key, cmd, now())
                if refusal is not None:  # the real service refuses it and does nothing: so does the benchmark
                    print(f"refused {cmd.step_id} of {cmd.release_id}: {refusal}", file=sys.stderr, flush=True)
                    self.counts["refused"] += 1
                    return []
                if isinstance(cmd, DeployRequested):
                    return [("deployer", deployed(cmd))]
                return [("rollback", rolled_back(cmd))]
            case VerificationRequested():
                marker = self._behaviour.fail_marker
                fail = bool(marker) and marker in cmd.release_id and cmd.environment == "production"
                return [
                    (f"verifier-{name}", verdict(cmd, name, fail=fail))
                    for name in self._verifiers.get(cmd.environment, [])
                ]
        return []

    async def serve(self, topic: str) -> None:
        consumer = self._consumers[topic]
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            pending = []
            for records in batch.values():
                for r in records:
                    if not (r.key or b"").decode(errors="replace").startswith(self._prefix):
                        continue
                    envelope = decode(r.headers, r.value)
                    answers = self._answers(topic, envelope)
                    pace = PACE.search(envelope.subject or "")
                    if pace and answers:
                        delay = int(pace.group(1)) / 1000 * self._rng.uniform(0.5, 1.5)
                        task = asyncio.create_task(self._answer(answers, envelope, delay))
                        self._later.add(task)
                        task.add_done_callback(self._settled)
                        continue
                    pending += await self._answer_now(answers, envelope)
            if pending:
                await asyncio.gather(*pending)
            if batch and self._behaviour.durable:  # answered and acknowledged: not answered again after a kill
                await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._later.discard(task)
        if not task.cancelled() and task.exception() is not None:  # its release stalls; the benchmark names it
            print(f"a paced answer failed: {task.exception()!r}", file=sys.stderr, flush=True)
            self.counts["failed"] += 1

    async def _answer_now(self, answers: list[tuple[str, Contract]], envelope: Envelope) -> list[asyncio.Future]:
        pending = []
        for principal, result in answers:
            answer = Envelope.new(
                result, f"releasegate/{principal}", envelope.subject, tenant=envelope.tenant, trace=envelope.trace
            )
            pending.append(await self._send(principal, answer))
            self.counts[principal] += 1
        return pending

    async def _answer(self, answers: list[tuple[str, Contract]], envelope: Envelope, delay: float) -> None:
        """The answers of a paced release's command, once its step's time has passed (the work it stands for)."""
        await asyncio.sleep(delay)
        await asyncio.gather(*await self._answer_now(answers, envelope))

    async def stop(self) -> None:
        """Commit the end of every command topic for the real services' groups, then close every client."""
        for task in self._later:
            task.cancel()
        for consumer in self._consumers.values():
            ends = await consumer.end_offsets(list(consumer.assignment()))
            await consumer.commit(ends)
            await consumer.stop()
        for name in self._names:  # the other verifiers' groups read the same verification requests
            if name == "business-kpis":
                continue
            await self._commit_end(f"verifier-{name}", topics.VERIFY_COMMANDS)
        for producer in self._producers.values():
            await producer.stop()

    async def _commit_end(self, principal: str, topic: str) -> None:
        consumer = AIOKafkaConsumer(
            **self._as(principal), group_id=f"releasegate-{principal}", enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in sorted(await self._producers[principal].partitions_for(topic))]
            consumer.assign(tps)
            await consumer.commit(await consumer.end_offsets(tps))
        finally:
            await consumer.stop()


async def main(
    prefix: str, catalog_dir: Path, services: list[str], heartbeat_seconds: float, behaviour: Behaviour
) -> None:
    settings = ServiceSettings()
    responder = Responder(settings, prefix, Catalog(catalog_dir), services, heartbeat_seconds, behaviour)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await responder.start()
    tasks = [asyncio.create_task(responder.serve(t)) for t in [*WORKERS, topics.VERIFY_COMMANDS]]
    tasks.append(asyncio.create_task(responder.heartbeats()))
    print("ready", flush=True)
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await responder.stop()
    print(f"answered {dict(responder.counts)}", flush=True)
    crashed = [t for t in done if t is not waiter and t.exception() is not None]
    if crashed:
        raise SystemExit(f"responder crashed: {crashed[0].exception()!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", required=True, help="answer only the releases whose id starts with this")
    parser.add_argument("--catalog-dir", type=Path, required=True)
    parser.add_argument("--service", action="append", help="a catalog entry it answers for (repeat; scale-bench)")
    parser.add_argument("--heartbeat-seconds", type=float, default=HEARTBEAT_SECONDS)
    parser.add_argument("--durable", action="store_true", help="commit what was answered after every batch")
    parser.add_argument("--resume", action="store_true", help="start from the commits, not the end")
    parser.add_argument("--fail-marker", help="release ids containing this fail their production verifications")
    parser.add_argument("--stateful-marker", help="release ids containing this report a data-rewriting migration")
    args = parser.parse_args()
    behaviour = Behaviour(args.durable, args.resume, args.fail_marker, args.stateful_marker)
    asyncio.run(main(args.prefix, args.catalog_dir, args.service or ["scale-bench"], args.heartbeat_seconds, behaviour))
