"""The coordinator's incident tables on the real database, as the coordinator's own role: the incident written once
with its follow-ups, a closed follow-up updated in place, the open ones of a service told (and no other
service's), and a batch seeing what it wrote itself before it commits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from contracts.events import ReleaseState
from releasegate_runtime import db
from releasegate_runtime.settings import ServiceSettings
from services.coordinator.adapters.postgres import PgSagaStore
from services.coordinator.model import Followup, Incident, Saga

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


@pytest.fixture
async def coordinator_pool(pool):  # `pool` (tests/conftest.py) applied the schema as its owner
    p = await db.create_pool(ServiceSettings().for_principal("coordinator").database_url, max_size=2)
    yield p
    await p.close()


@pytest.fixture
async def service(pool):
    """A service name of this test's own, so that the shop's real follow-ups are neither read nor changed."""
    name = f"it-inc-{uuid.uuid4().hex[:8]}"
    yield name
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM incident_followups WHERE service = $1", name)
        await conn.execute("DELETE FROM incidents WHERE service = $1", name)


def followup(number: int, severity: str = "high", status: str = "open") -> Followup:
    return Followup(
        id=number,
        kind="test",
        severity=severity,  # type: ignore[arg-type]
        owner="shop-approvers",
        title=f"follow-up {number}",
        status=status,  # type: ignore[arg-type]
        added_by="alice",
        added_at=NOW,
        reason="learnt",
    )


def rolled_back(service: str, release_id: str, *followups: Followup) -> Saga:
    return Saga(
        release_id=release_id,
        service=service,
        version="v3",
        digest="sha256:" + "e" * 64,
        candidate={},
        plan=[],
        state=ReleaseState.ROLLED_BACK,
        incident=Incident(
            opened_at=NOW,
            outcome=ReleaseState.ROLLED_BACK,
            summary="verify-canary-internal failed",
            findings={"verifier": "business-kpis", "kpis": [{"name": "checkout_success_rate", "candidate": 0.5}]},
            followups=list(followups),
        ),
    )


async def test_the_incident_is_written_once_and_a_closed_follow_up_updated(coordinator_pool, pool, service):
    store = PgSagaStore(coordinator_pool)
    rid = f"{service}-v3-1"
    async with store.transaction() as tx:
        await tx.record_incident(rolled_back(service, rid, followup(1)))
    closed = followup(1, status="closed").model_copy(update={"closed_by": "carol", "closed_at": NOW})
    again = rolled_back(service, rid, closed, followup(2, "low"))
    again.incident.summary = "a later write never changes what was recorded at the end"  # type: ignore[union-attr]
    async with store.transaction() as tx:
        await tx.record_incident(again)
        told = await tx.open_followups(service)
    assert [(f.release_id, f.followup, f.severity) for f in told] == [(rid, 2, "low")]
    async with pool.acquire() as conn:
        incident = await conn.fetchrow("SELECT summary, findings, outcome FROM incidents WHERE release_id = $1", rid)
        rows = await conn.fetch(
            "SELECT followup_id, status, closed_by FROM incident_followups WHERE release_id = $1 ORDER BY 1", rid
        )
    assert incident["summary"] == "verify-canary-internal failed" and incident["outcome"] == "rolled_back"
    assert incident["findings"]["verifier"] == "business-kpis"
    assert [tuple(r) for r in rows] == [(1, "closed", "carol"), (2, "open", None)]


async def test_only_the_services_own_open_follow_ups_are_told(coordinator_pool, service, pool):
    store = PgSagaStore(coordinator_pool)
    other = f"it-inc-{uuid.uuid4().hex[:8]}"
    try:
        async with store.transaction() as tx:
            await tx.record_incident(rolled_back(service, f"{service}-v3-1", followup(1)))
            await tx.record_incident(rolled_back(other, f"{other}-v3-1", followup(1)))
            assert [f.release_id for f in await tx.open_followups(service)] == [f"{service}-v3-1"]
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM incident_followups WHERE service = $1", other)
            await conn.execute("DELETE FROM incidents WHERE service = $1", other)


async def test_a_batch_sees_the_follow_ups_it_wrote_before_it_commits(coordinator_pool, service):
    store = PgSagaStore(coordinator_pool)
    rid = f"{service}-v3-1"
    async with store.batch("it-incidents", [], [], registry_stable=True):
        async with store.transaction() as tx:
            await tx.record_incident(rolled_back(service, rid, followup(1)))
        async with store.transaction() as tx:
            assert [f.followup for f in await tx.open_followups(service)] == [1]
    async with store.transaction() as tx:
        assert [f.followup for f in await tx.open_followups(service)] == [1]
