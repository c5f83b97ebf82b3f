"""The coordinator's handlers with in-memory fakes of their ports: a release from submission to promotion, a
failed verification compensated in reverse order, redelivered results and replayed commands, refused commands."""

from __future__ import annotations

import copy
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import (
    AbortRequested,
    CandidateSubmitted,
    CheckResult,
    Contract,
    DeployFinished,
    DeployRequested,
    DRCheckFinished,
    DRCheckRequested,
    FollowupAdded,
    FollowupClosed,
    GateCheckFinished,
    GateCheckRequested,
    KpiResult,
    ObservedState,
    OpenFollowup,
    OperatorCommand,
    PauseRequested,
    ReleaseState,
    ResumeRequested,
    RollbackFinished,
    RollbackRequested,
    Verdict,
    VerificationFinished,
    VerificationRequested,
)
from releasegate_platform import identity, supply_chain
from releasegate_platform.catalog import Catalog, CatalogError, ServiceEntry
from releasegate_platform.verifier_registry import Known
from releasegate_runtime import grants
from services.coordinator import incidents
from services.coordinator.handlers import Coordinator
from services.coordinator.model import Incident, Saga
from services.coordinator.ports import AuditEntry, ConcurrentUpdate, Due, Loaded

REPO = Path(__file__).resolve().parents[2]
SHOP = Catalog(REPO / "catalog").get("shop")
# the core verifier alone judges, as in test_saga
ENTRY = SHOP.model_copy(update={"verification": SHOP.verification.model_copy(update={"by_environment": {}})})
PEOPLE = REPO / "policies" / "identities.yaml"
KEYS = REPO / "examples" / "keys"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "b" * 64


@dataclass
class State:
    sagas: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)
    processed: set[tuple[str, str]] = field(default_factory=set)
    nonces: set[str] = field(default_factory=set)
    deadlines: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    audit: list[AuditEntry] = field(default_factory=list)
    outbox: list[tuple[str, Envelope]] = field(default_factory=list)
    staging_verified: set[tuple[str, str]] = field(default_factory=set)
    incidents: dict[str, Incident] = field(default_factory=dict)  # the incidents tables, by release
    services: dict[str, str] = field(default_factory=dict)  # release → service of each incident


class FakeTransaction:
    def __init__(self, state: State, store: FakeStore) -> None:
        self.state, self.store = state, store

    async def first_time(self, consumer: str, event_id: str) -> bool:
        if (consumer, event_id) in self.state.processed:
            return False
        self.state.processed.add((consumer, event_id))
        return True

    async def exists(self, release_id: str) -> bool:
        return release_id in self.state.sagas

    async def insert(self, saga: Saga) -> None:
        self.state.sagas[saga.release_id] = (saga.model_dump(mode="json"), 0)

    async def load(self, release_id: str) -> Loaded | None:
        row = self.state.sagas.get(release_id)
        return None if row is None else Loaded(Saga.model_validate(row[0]), row[1])

    async def save(self, saga: Saga, revision: int) -> None:
        if self.store.conflicts:
            self.store.conflicts -= 1
            raise ConcurrentUpdate(saga.release_id)
        if self.state.sagas[saga.release_id][1] != revision:
            raise ConcurrentUpdate(saga.release_id)
        self.state.sagas[saga.release_id] = (saga.model_dump(mode="json"), revision + 1)

    async def first_use_of_nonce(self, command: OperatorCommand, at: datetime) -> bool:
        if not command.nonce:
            return True
        if command.nonce in self.state.nonces:
            return False
        self.state.nonces.add(command.nonce)
        return True

    async def verifiers(self, now: datetime) -> Known:
        return Known(alive={"business-kpis": {"*"}}, registered={"business-kpis": {"*"}})

    async def set_deadline(self, release_id: str, deadline: tuple[str, datetime] | None) -> None:
        self.state.deadlines.pop(release_id, None)
        if deadline is not None:
            self.state.deadlines[release_id] = deadline

    async def claim_deadline(self, due: Due) -> bool:
        if due in self.store.claimed:
            return False  # another coordinator instance's transaction holds it
        return self.state.deadlines.get(due.release_id) == (due.step_id, due.due_at)

    async def audit(self, entry: AuditEntry) -> None:
        self.state.audit.append(entry)

    async def audit_as_it_stands(self, release_id: str, actor: str, reason: str, evidence: dict[str, Any]) -> None:
        body, _ = self.state.sagas[release_id]
        self.state.audit.append(AuditEntry(release_id, actor, body["state"], body["waiting_for"], reason, evidence))

    async def publish(self, topic: str, envelope: Envelope) -> None:
        self.state.outbox.append((topic, envelope))

    async def mark_staging_verified(self, service: str, digest: str, release_id: str) -> None:
        self.state.staging_verified.add((service, digest))

    async def record_incident(self, saga: Saga) -> None:
        assert saga.incident is not None
        self.state.incidents[saga.release_id] = saga.incident.model_copy(deep=True)
        self.state.services[saga.release_id] = saga.service

    async def open_followups(self, service: str) -> list[OpenFollowup]:
        return [
            f
            for rid, incident in self.state.incidents.items()
            if self.state.services[rid] == service
            for f in incidents.open_followups(rid, incident)
        ]

    def after_commit(self, callback) -> None:
        self.store.pending.append(callback)


class FakeStore:
    """All or nothing, like the database: a transaction that raises leaves the state as it was."""

    def __init__(self) -> None:
        self.state = State()
        self.conflicts = 0  # how many saves fail as if another writer had been first
        self.transactions = 0
        self.claimed: set[Due] = set()  # deadlines another coordinator instance is firing right now
        self.pending: list = []  # what waits for the commit
        self.committed = 0  # callbacks run after a commit
        self._batch: FakeTransaction | None = None

    @asynccontextmanager
    async def transaction(self):
        if self._batch is not None:
            yield self._batch
            return
        async with self._commit() as working:
            yield FakeTransaction(working, self)

    @asynccontextmanager
    async def batch(self, consumer, event_ids, release_ids, *, registry_stable, now=None):
        async with self._commit() as working:
            self._batch = FakeTransaction(working, self)
            try:
                yield
            finally:
                self._batch = None

    @asynccontextmanager
    async def _commit(self):
        self.transactions += 1
        self.pending = []
        working = copy.deepcopy(self.state)
        yield working
        self.state = working
        for callback in self.pending:
            callback()
            self.committed += 1
        self.pending = []

    async def due_deadlines(self, now: datetime, limit: int) -> list[Due]:
        due = [Due(rid, step, at) for rid, (step, at) in self.state.deadlines.items() if at <= now]
        return sorted(due, key=lambda d: d.due_at)[:limit]


class FakeCatalog:
    def __init__(self, *entries: ServiceEntry) -> None:
        self._entries = {e.name: e for e in entries}

    def get(self, service: str) -> ServiceEntry:
        if service not in self._entries:
            raise CatalogError(f"service {service!r} is not in the catalog")
        return self._entries[service]


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def grant_keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    private, public = supply_chain.keygen(directory, "coordinator")
    return grants.load_grant_signer(private), grants.load_grant_key(public)


@pytest.fixture
def world(grant_keys):
    store, clock = FakeStore(), Clock()
    coordinator = Coordinator(
        store, FakeCatalog(ENTRY), lambda: identity.Identities.load(PEOPLE), grant_keys[0], clock=clock
    )
    return coordinator, store, clock


def envelope(event: Contract) -> Envelope:
    return Envelope.new(event, "test", getattr(event, "release_id", None))


def submitted(release_id: str = "rel-h1") -> CandidateSubmitted:
    return CandidateSubmitted.model_validate(
        {
            "release_id": release_id,
            "service": "shop",
            "version": "v2",
            "artifact": {"digest": DIGEST, "uri": "store://x"},
            "source": {"repository": "r", "ref": "refs/heads/main", "commit": "c" * 40},
            "tests": {"passed": 3, "failed": 0},
            "author": "dev@shop",
        }
    )


def saga_of(store: FakeStore, release_id: str = "rel-h1") -> Saga:
    return Saga.model_validate(store.state.sagas[release_id][0])


def last_command(store: FakeStore) -> tuple[str, Contract]:
    topic, sent = next((t, e) for t, e in reversed(store.state.outbox) if t != topics.STATUS)
    return topic, sent.data


def result_for(command: Contract, ok: bool = True) -> Contract:
    """What the worker would answer to `command`."""
    checks = [CheckResult(name="c", passed=ok, reason="r")]
    match command:
        case GateCheckRequested():
            return GateCheckFinished(
                release_id=command.release_id,
                step_id=command.step_id,
                environment=command.environment,
                passed=ok,
                checks=checks,
            )
        case DRCheckRequested():
            return DRCheckFinished(release_id=command.release_id, step_id=command.step_id, ready=ok, checks=checks)
        case DeployRequested():
            return DeployFinished(
                release_id=command.release_id,
                step_id=command.step_id,
                environment=command.environment,
                succeeded=ok,
                reason="r",
                observed=ObservedState(weights={"v2": command.weight}, stable_version="v1"),
            )
        case RollbackRequested():
            return RollbackFinished(
                release_id=command.release_id,
                step_id=command.step_id,
                environment=command.environment,
                succeeded=ok,
                reason="traffic back",
            )
        case VerificationRequested():
            verdict = Verdict.PASS if ok else Verdict.FAIL
            return VerificationFinished(
                release_id=command.release_id,
                step_id=command.step_id,
                environment=command.environment,
                verdict=verdict,
                reason="r",
                window_start=NOW,
                window_end=NOW,
                verifier="business-kpis",
                kpis=[
                    KpiResult(
                        name="checkout_success_rate",
                        candidate=0.97,
                        baseline=0.98,
                        candidate_samples=30,
                        baseline_samples=200,
                        verdict=verdict,
                        rule="candidate >= 0.85",
                    )
                ],
            )
    raise AssertionError(f"no worker answers {type(command).__name__}")


async def run_until(coordinator: Coordinator, store: FakeStore, step_id: str) -> None:
    for _ in range(100):
        if saga_of(store).waiting_for == step_id:
            return
        await coordinator.on_event(envelope(result_for(last_command(store)[1])))
    raise AssertionError(f"the release never reached {step_id}")


def signed(command: OperatorCommand, key: str | None = None) -> OperatorCommand:
    return identity.sign_command(KEYS / f"{key or command.actor}.key", command, now=NOW)


class TestAReleaseThroughTheHandlers:
    async def test_a_candidate_is_promoted_through_its_results(self, world, grant_keys):
        coordinator, store, _ = world
        await coordinator.on_event(envelope(submitted()))
        for _ in range(100):
            if saga_of(store).state.terminal:
                break
            await coordinator.on_event(envelope(result_for(last_command(store)[1])))
        s = saga_of(store)
        assert s.state.value == "promoted" and s.stable == {"production": "v2", "staging": "v2"}
        assert store.state.audit[-1].state == "promoted"
        assert store.state.deadlines == {}
        sent = [e.data for t, e in store.state.outbox if t != topics.STATUS]
        assert [c.step_id for c in sent] == [st.id for st in s.plan]
        deploys = [c for c in sent if isinstance(c, DeployRequested)]
        assert deploys and all(c.grant is not None for c in deploys), "every deploy leaves with its step grant"
        assert grants.verify_grant(grant_keys[1], deploys[0], NOW) is None

    async def test_the_production_gate_is_told_the_staging_verification_the_release_passed(self, world):
        coordinator, store, clock = world
        await coordinator.on_event(envelope(submitted()))
        await run_until(coordinator, store, "verify-staging")
        clock.now = NOW + timedelta(minutes=3)
        await run_until(coordinator, store, "gate-production")
        gates = [e.data for t, e in store.state.outbox if isinstance(e.data, GateCheckRequested)]
        staging, production = gates[0], gates[-1]
        assert staging.staging_verified is None
        fact = production.staging_verified
        assert (fact.release_id, fact.digest, fact.step_id) == ("rel-h1", DIGEST, "verify-staging")
        assert fact.verified_at == NOW + timedelta(minutes=3)
        assert store.state.staging_verified == {("shop", DIGEST)}

    async def test_an_unknown_service_is_rejected_with_the_reason(self, world):
        coordinator, store, _ = world
        await coordinator.on_event(envelope(submitted().model_copy(update={"service": "nowhere"})))
        assert saga_of(store).state.value == "rejected"
        assert "not in the catalog" in store.state.audit[-1].reason


class TestCompensation:
    async def test_a_failed_verification_compensates_completed_steps_latest_first(self, world):
        coordinator, store, _ = world
        await coordinator.on_event(envelope(submitted()))
        await run_until(coordinator, store, "verify-canary-10")
        await coordinator.on_event(envelope(result_for(last_command(store)[1], ok=False)))
        issued = []
        while saga_of(store).state.value == "rolling_back":
            topic, command = last_command(store)
            assert topic == topics.ROLLBACK_COMMANDS and command.grant is not None
            issued.append(command.environment)
            await coordinator.on_event(envelope(result_for(command)))
        assert issued == ["production", "staging"]
        s = saga_of(store)
        assert s.state.value == "rolled_back"
        assert [c.name for c in s.compensations] == ["restore-traffic-production", "restore-traffic-staging"]
        assert s.compensations[0].undoes[0] == "canary-10"


class TestRedeliveryAndReplay:
    async def test_a_redelivered_result_changes_nothing(self, world):
        coordinator, store, _ = world
        await coordinator.on_event(envelope(submitted()))
        first = envelope(result_for(last_command(store)[1]))
        await coordinator.on_event(first)
        before = copy.deepcopy(store.state)
        await coordinator.on_event(first)
        assert store.state == before

    async def test_a_result_for_a_step_no_longer_awaited_changes_nothing_but_the_ledger(self, world):
        coordinator, store, _ = world
        await coordinator.on_event(envelope(submitted()))
        stale = result_for(last_command(store)[1])
        await coordinator.on_event(envelope(stale))
        before = copy.deepcopy(store.state)
        await coordinator.on_event(envelope(stale))  # same result, new envelope id: not awaited any more
        assert store.state.sagas == before.sagas and store.state.outbox == before.outbox
        assert store.state.audit == before.audit

    async def test_a_replayed_operator_command_is_refused_and_recorded(self, world):
        coordinator, store, _ = world
        await coordinator.on_event(envelope(submitted()))
        await run_until(coordinator, store, "verify-canary-10")
        pause = signed(PauseRequested(release_id="rel-h1", actor="carol", reason="flash sale"))
        await coordinator.on_event(envelope(pause))
        assert saga_of(store).state.value == "paused"
        await coordinator.on_event(envelope(signed(ResumeRequested(release_id="rel-h1", actor="carol", reason="ok"))))
        assert saga_of(store).state.value == "running"
        await coordinator.on_event(envelope(pause))  # the same signed command, copied onto the bus again
        assert saga_of(store).state.value == "running"
        assert "replayed command" in store.state.audit[-1].reason and store.state.audit[-1].actor == "carol"


class TestOperatorCommands:
    async def test_a_command_with_a_bad_signature_is_refused_and_recorded(self, world):
        coordinator, store, _ = world
        await coordinator.on_event(envelope(submitted()))
        await run_until(coordinator, store, "verify-canary-10")
        before = saga_of(store)
        forged = signed(AbortRequested(release_id="rel-h1", actor="carol", reason="stop"), key="bob")
        await coordinator.on_event(envelope(forged))
        after = saga_of(store)
        assert after.state is before.state and after.waiting_for == before.waiting_for
        entry = store.state.audit[-1]
        assert entry.actor == "carol" and "refused" in entry.reason
        assert store.state.nonces == set(), "an unverified command's nonce is not spent"

    async def test_a_command_the_identities_file_cannot_check_is_refused(self, grant_keys, tmp_path):
        store = FakeStore()

        def broken() -> identity.Identities:
            raise identity.IdentityError("identities file unreadable")

        coordinator = Coordinator(store, FakeCatalog(ENTRY), broken, grant_keys[0], clock=Clock())
        await coordinator.on_event(envelope(submitted()))
        await coordinator.on_event(envelope(signed(AbortRequested(release_id="rel-h1", actor="carol", reason="x"))))
        assert saga_of(store).state.value == "running"
        assert "cannot check the signature" in store.state.audit[-1].reason


class TestConcurrencyAndDeadlines:
    async def test_a_concurrent_update_is_retried_on_the_reloaded_saga(self, world):
        coordinator, store, _ = world
        await coordinator.on_event(envelope(submitted()))
        store.conflicts = 2
        await coordinator.on_event(envelope(result_for(last_command(store)[1])))
        assert store.conflicts == 0 and saga_of(store).waiting_for != "gate-staging"
        assert store.state.sagas["rel-h1"][1] == 1, "saved once, at the revision it was read at"

    async def test_a_saga_that_keeps_changing_is_given_up_loudly(self, world):
        coordinator, store, _ = world
        await coordinator.on_event(envelope(submitted()))
        store.conflicts = 100
        with pytest.raises(ConcurrentUpdate, match="kept changing"):
            await coordinator.on_event(envelope(result_for(last_command(store)[1])))
        assert saga_of(store).waiting_for == "gate-staging"

    async def test_a_step_without_an_answer_fails_the_release_at_its_deadline(self, world):
        coordinator, store, clock = world
        await coordinator.on_event(envelope(submitted()))
        assert await coordinator.fire_due_deadlines() == 0
        clock.now = NOW + timedelta(hours=1)
        assert await coordinator.fire_due_deadlines() == 1
        s = saga_of(store)
        assert s.state.value == "rolled_back", "nothing was deployed, so nothing to compensate"
        assert "got no answer before its deadline" in store.state.audit[-1].reason

    async def test_a_deadline_another_instance_is_firing_is_left_to_it(self, world):
        coordinator, store, clock = world
        await coordinator.on_event(envelope(submitted()))
        clock.now = NOW + timedelta(hours=1)
        (due,) = await store.due_deadlines(clock.now, 20)
        store.claimed.add(due)
        audit_before = list(store.state.audit)
        await coordinator.fire_due_deadlines()
        assert (saga_of(store).state.value, store.state.audit) == ("running", audit_before)
        store.claimed.clear()
        await coordinator.fire_due_deadlines()
        assert saga_of(store).state.value == "rolled_back"

    async def test_a_deadline_replaced_after_it_was_read_does_not_fire(self, world):
        coordinator, store, clock = world
        await coordinator.on_event(envelope(submitted()))
        clock.now = NOW + timedelta(hours=1)
        (due,) = await store.due_deadlines(clock.now, 20)
        await coordinator.on_event(envelope(result_for(last_command(store)[1])))  # the answer came meanwhile
        moved_on = saga_of(store).waiting_for
        audit_before = list(store.state.audit)

        async def stale_read(now, limit):
            return [due]

        store.due_deadlines = stale_read
        await coordinator.fire_due_deadlines()
        assert (saga_of(store).waiting_for, store.state.audit) == (moved_on, audit_before)


class TestIncidents:
    """The handler writes the incident tables in the decision's transaction and tells the production gate."""

    async def test_the_next_production_gate_is_told_the_open_follow_ups_until_they_are_closed(self, world):
        coordinator, store, _ = world
        await coordinator.on_event(envelope(submitted("rel-h1")))
        await run_until(coordinator, store, "verify-canary-internal")
        await coordinator.on_event(envelope(result_for(last_command(store)[1], ok=False)))
        while saga_of(store).state is ReleaseState.ROLLING_BACK:
            await coordinator.on_event(envelope(result_for(last_command(store)[1])))
        assert saga_of(store).state is ReleaseState.ROLLED_BACK
        incident = store.state.incidents["rel-h1"]
        assert incident.findings["verifier"] == "business-kpis" and incident.followups == []

        add_cmd = signed(
            FollowupAdded(
                release_id="rel-h1",
                actor="alice",
                reason="learnt",
                kind="test",
                severity="high",
                owner="shop-approvers",
                title="card mix in the staging smoke",
            )
        )
        published = len(store.state.outbox)
        await coordinator.on_event(envelope(add_cmd))
        assert [f.status for f in store.state.incidents["rel-h1"].followups] == ["open"]
        # audit only: a status event in the terminal state would announce the rollback once more
        assert len(store.state.outbox) == published
        assert store.state.audit[-1].actor == "alice" and "follow-up 1 added" in store.state.audit[-1].reason

        # an unknown owner is refused with the reason (the identities file knows no such person or group)
        stranger = signed(add_cmd.model_copy(update={"owner": "mallory", "signature": None, "keyid": None}))
        await coordinator.on_event(envelope(stranger))
        assert "owner mallory is neither" in store.state.audit[-1].reason
        assert len(store.state.incidents["rel-h1"].followups) == 1

        await coordinator.on_event(envelope(submitted("rel-h2")))
        gate = await self._production_gate(coordinator, store, "rel-h2")
        assert [(f.release_id, f.followup, f.severity) for f in gate.open_followups] == [("rel-h1", 1, "high")]

        # a forged close (signed with another person's key) changes nothing but the audit log
        forged = signed(FollowupClosed(release_id="rel-h1", actor="carol", reason="done", followup=1), key="dev")
        await coordinator.on_event(envelope(forged))
        assert store.state.incidents["rel-h1"].followups[0].status == "open"
        assert "refused" in store.state.audit[-1].reason and store.state.audit[-1].actor == "carol"

        close_cmd = signed(FollowupClosed(release_id="rel-h1", actor="carol", reason="done", followup=1))
        await coordinator.on_event(envelope(close_cmd))
        assert store.state.incidents["rel-h1"].followups[0].status == "closed"
        await coordinator.on_event(envelope(submitted("rel-h3")))
        gate = await self._production_gate(coordinator, store, "rel-h3")
        assert gate.open_followups == []

    @staticmethod
    async def _production_gate(coordinator, store, release_id: str) -> GateCheckRequested:
        for _ in range(100):
            saga = saga_of(store, release_id)
            if saga.waiting_for == "gate-production":
                break
            sent = next(
                e.data
                for t, e in reversed(store.state.outbox)
                if t != topics.STATUS and getattr(e.data, "release_id", None) == release_id
            )
            await coordinator.on_event(envelope(result_for(sent)))
        gate = next(
            e.data
            for _, e in reversed(store.state.outbox)
            if isinstance(e.data, GateCheckRequested) and e.data.release_id == release_id
        )
        assert gate.environment == "production"
        return gate
