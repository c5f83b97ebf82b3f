"""End to end, stateful releases: recovery proven before a risky change (backup age, restore drill recency and
speed), a hold point that waits for go or no-go, and a failed release whose migration rewrote data, rolled back by
restoring the backup point and replaying orders — none lost by the customer's own account (the shopper's ledger),
and no order taken while maintenance mode was on."""

from __future__ import annotations

import shutil
from datetime import datetime

import asyncpg
import pytest
import yaml

from contracts import topics
from contracts.events import OrderPlaced
from releasegate_cli.probes import TopicTail
from releasegate_platform.pgtools import postgres
from releasegate_runtime.settings import ServiceSettings
from shop.shopper import read_ledger
from tests.conftest import REPO, as_principal, wait_until
from tests.e2e.conftest import (
    LEDGERS,
    Client,
    approve,
    assert_back_on_stable,
    cli,
    operate,
    release,
    release_sampled,
    status,
    submit,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("catalog")
    shutil.copy(REPO / "catalog" / "shop.yaml", path / "shop.yaml")
    return path


@pytest.fixture(scope="module")
def catalog_env(catalog_dir) -> dict[str, str]:
    return {"RG_CATALOG_DIR": str(catalog_dir)}


@pytest.fixture
def catalog(catalog_dir):
    """Edit this module's catalog entry (services re-read it on every request); restored after the test."""
    original = (catalog_dir / "shop.yaml").read_text()

    def edit(**dr) -> None:
        entry = yaml.safe_load(original)
        entry["dr"].update(dr)
        (catalog_dir / "shop.yaml").write_text(yaml.safe_dump(entry))

    yield edit
    (catalog_dir / "shop.yaml").write_text(original)


def dr_rejection(version: str = "v2") -> dict[str, dict]:
    rid, timeline = release(version, promoted=False)
    failed = next(t for t in timeline if t["step"] == "dr-check" and "failed" in t["reason"])
    assert status(rid)["state"] == "rejected"
    assert not any(t["step"] == "deploy-staging" for t in timeline)
    return {c["name"]: c for c in failed["evidence"]["checks"]}


class TestRecoveryProvenBeforeRelease:
    async def test_blocked_when_the_newest_backup_is_older_than_the_rpo(self, services, stable_v1, catalog):
        catalog(rpo_seconds=0.5)
        check = dr_rejection()["backup_freshness"]
        assert not check["passed"] and "older than the RPO of 0.5s" in check["reason"]
        assert check["evidence"]["age_seconds"] > check["evidence"]["rpo_seconds"]

    async def test_blocked_when_the_restore_drill_was_slower_than_the_rto(self, services, stable_v1, catalog):
        catalog(rto_seconds=0.001)
        check = dr_rejection()["restore_time_within_rto"]
        assert not check["passed"] and "slower than the RTO of 0.001s" in check["reason"]
        assert check["evidence"]["restore_seconds"] > 0.001

    async def test_blocked_when_the_last_restore_drill_is_too_old(self, services, stable_v1, catalog):
        catalog(drill_max_age_seconds=0.5)
        check = dr_rejection()["restore_drill_recency"]
        assert not check["passed"] and "older than the 0.5s the tier allows" in check["reason"]

    async def test_blocked_when_the_standby_lags_more_than_the_rpo(self, settings, services, stable_v1, catalog):
        catalog(rpo_seconds=4)
        standby = await asyncpg.connect(postgres.dsn_for(settings.database_url, "shop", host="127.0.0.1", port=15433))
        try:
            await standby.execute("SELECT pg_wal_replay_pause()")

            async def lagging() -> bool:
                return (
                    await standby.fetchval("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())") or 0
                ) > 6

            await wait_until(lagging, 60, "the standby to fall more than 6s behind (shoppers keep writing)")
            backed_up = cli("dr", "backup", "shop")  # a fresh backup, so only the replica is out of its RPO
            assert backed_up.returncode == 0, backed_up.stdout
            checks = dr_rejection()
        finally:
            await _resume_replay(standby)
            await standby.close()
        lag = checks["replica_lag"]
        assert not lag["passed"] and "more than the RPO of 4s" in lag["reason"]
        assert lag["evidence"]["lag_seconds"] > lag["evidence"]["rpo_seconds"]


async def _resume_replay(standby) -> None:
    """Resume the standby's replay; a hot standby may cancel the statement once for a recovery conflict (a clean-clone
    run saw it), which only means it has to be said again."""
    for attempt in range(5):
        try:
            await standby.execute("SELECT pg_wal_replay_resume()")
            return
        except asyncpg.SerializationError:
            if attempt == 4:
                raise


class TestHoldPoint:
    async def test_waits_for_go_and_aborts_on_no_go(self, services, stable_v1, catalog):
        catalog(hold_point=True)
        rid = submit("v2")

        async def at_hold():
            r = status(rid)
            return r["state"] == "awaiting_approval" and r["step"] == "hold-production"

        await wait_until(at_hold, 180, "v2 at its hold point")
        hold = next(t for t in status(rid)["timeline"] if t["step"] == "hold-production")
        assert hold["evidence"]["dr_report"] and hold["evidence"]["staging_verdict"]
        approve(rid, "dev", kind="go", reason="my own change, let it go")
        approve(rid, "dave", kind="go", reason="not my group")
        approve(rid, "alice", kind="no-go", reason="ERP cut-over tonight; not now")
        await wait_until(lambda: _state(rid, "aborted"), 180, "v2 aborted on no-go")
        reasons = [t["reason"] for t in status(rid)["timeline"]]
        assert any("go by dev refused: the author of a change cannot approve it" in r for r in reasons)
        assert any("go by dave refused: not in the shop-approvers group" in r for r in reasons)
        assert any(r.startswith("rolling back: no-go at hold-production by alice") for r in reasons)

        rid = submit("v2")
        await wait_until(at_hold, 180, "second v2 at its hold point")
        approve(rid, "bob", kind="go", reason="evidence reviewed")
        await wait_until(lambda: _past_hold(rid), 60, "the release moving past the hold point on go")
        operate("abort", rid, "end of the hold point test")
        await wait_until(lambda: _state(rid, "aborted"), 180, "second v2 aborted")


class TestDataAwareRollback:
    async def test_failed_data_rewrite_is_undone_by_restore_and_replay_with_no_order_lost(
        self, settings, services, stable_v1, canary
    ):
        ledger = LEDGERS["production"]
        ledger_start = len(read_ledger(ledger))
        placed = await TopicTail(as_principal(settings, "ops"), topics.SHOP_EVENTS).start()
        before = await _orders()
        # initech is the catalog's internal tenant: it and the insiders' cookie reach the candidate first
        insiders = [Client("initech", tenant="initech"), Client("canary-cookie", cookie=canary)]
        try:
            rid, timeline, sampled = await release_sampled(
                "v10", insiders, promoted=False, approvers=("alice", "bob"), timeout=500
            )
            during = await _orders()
            events = await placed.collect()
        finally:
            await placed.stop()
        assert status(rid)["state"] == "rolled_back", [t["reason"] for t in timeline[-3:]]
        steps = [t["step"] for t in timeline]
        assert steps.index("backup-point") < steps.index("migrate-production")
        done = next(t for t in timeline if t["actor"] == "rollback" and "compensate:production done" in t["reason"])
        report = done["evidence"]["incident_report"]
        assert report["not_replayable"] == [] and report["replayed"] > 0
        assert all(c["passed"] for c in report["integrity_checks"])
        # orders of the shop's production instances (the deployer names them production-<slot>-<version>)
        production = {
            e.data.order_id
            for e in events
            if isinstance(e.data, OrderPlaced)
            and e.data.environment == "production"
            and e.data.instance.startswith("production-")
            and e.data.order_id
        }
        after = await _orders()
        missing = production - after
        assert not missing, f"{len(missing)} of {len(production)} orders placed during the release are gone"
        assert len(before) <= len(during) and before <= after
        assert not await _has_column("orders", "amount_minor_units")

        # The customer's account, which shares nothing with the shop's events: the shopper goes on after the
        # restore, so wait until it has an order confirmed after its last maintenance answer (which also shows
        # the shop takes orders again), then judge every line it wrote since the release began.
        async def seen_through_maintenance() -> list[dict] | None:
            lines = read_ledger(ledger)[ledger_start:]
            answers = [e for e in lines if e["kind"] == "maintenance"]
            last = max((_at(e, "at") for e in answers), default=None)
            return (
                lines if last and any(e["kind"] == "order" and _at(e, "requested_at") > last for e in lines) else None
            )

        lines = await wait_until(
            seen_through_maintenance, 120, "the shopper to meet maintenance mode and then have an order confirmed again"
        )
        confirmed = {e["order_id"]: e for e in lines if e["kind"] == "order"}
        stored = await _amounts(list(confirmed))
        lost = [
            f"{e['order_id']} ({e['tenant']}, {e['version']}, confirmed {e['at']})"
            for e in confirmed.values()
            if e["order_id"] not in stored
        ]
        assert not lost, (
            f"{len(lost)} of {len(confirmed)} orders the shopper saw confirmed are not in the restored "
            f"database: {lost[:20]}"
        )
        wrong = {
            i: (e["amount_cents"], stored[i])
            for i, e in confirmed.items()
            if e["amount_cents"] is not None and e["amount_cents"] != stored[i]
        }
        assert not wrong, f"orders whose amount is not the one confirmed to the shopper (ledger, database): {wrong}"
        assert any(e["version"] == "v10" for e in confirmed.values()), "the candidate confirmed no order to judge"

        # Maintenance: from the shopper's first maintenance answer to the sending of its last one, HAProxy answered
        # every request of the shop itself, so no order can have been both asked for and confirmed in between.
        answers = [e for e in lines if e["kind"] == "maintenance"]
        first_seen, last_sent = min(_at(e, "at") for e in answers), max(_at(e, "requested_at") for e in answers)
        taken = [
            e["order_id"]
            for e in confirmed.values()
            if first_seen < _at(e, "requested_at") and _at(e, "at") < last_sent
        ]
        assert not taken, f"orders taken while maintenance mode answered 503: {taken}"

        # Traffic: the insiders' probes reached v10 during the canary, and after the rollback they, the moved
        # tenants and every other tenant are on v1
        assert all(sampled.seen[who.name]["v10"] > 0 for who in insiders), sampled.seen
        await assert_back_on_stable("v1", timeline, canary)


def _state(rid: str, state: str):
    async def check():
        return status(rid)["state"] == state

    return check()


async def _past_hold(rid: str) -> bool:
    r = status(rid)
    return r["state"] == "running" and r["step"] not in (None, "hold-production")


def _shop_db():
    return asyncpg.connect(postgres.dsn_for(ServiceSettings().database_url, "shop"))


async def _orders() -> set[str]:
    conn = await _shop_db()
    try:
        return {str(r["id"]) for r in await conn.fetch("SELECT id FROM orders WHERE environment = 'production'")}
    finally:
        await conn.close()


def _at(entry: dict, field: str) -> datetime:
    return datetime.fromisoformat(entry[field])


async def _amounts(order_ids: list[str]) -> dict[str, int]:
    """Order id → amount_cents of those of `order_ids` the shop database holds."""
    conn = await _shop_db()
    try:
        return {
            str(r["id"]): r["amount_cents"]
            for r in await conn.fetch("SELECT id, amount_cents FROM orders WHERE id = ANY($1::uuid[])", order_ids)
        }
    finally:
        await conn.close()


async def _has_column(table: str, column: str) -> bool:
    conn = await _shop_db()
    try:
        return bool(
            await conn.fetchval(
                "SELECT 1 FROM information_schema.columns WHERE table_name = $1 AND column_name = $2", table, column
            )
        )
    finally:
        await conn.close()
