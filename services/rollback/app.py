"""Rollback process."""

from __future__ import annotations

from contracts import topics
from contracts.events import RollbackRequested
from releasegate_platform.haproxy import HAProxy
from releasegate_platform.identity import refuse_demo_keys
from releasegate_platform.local_target import LocalTarget
from releasegate_runtime import grants, runner
from releasegate_runtime.admission import Admission
from services.rollback.handlers import CONSUMER, Rollback
from services.rollback.ledger import PgStepLedger

NAME = "rollback"


async def setup(rt: runner.Runtime) -> None:
    target = LocalTarget(rt.pool, HAProxy(rt.settings.haproxy_admin), rt.settings.run_dir)
    coordinator_key = grants.load_grant_key(
        rt.settings.coordinator_public_key_file or rt.settings.secrets_dir / "keys" / "coordinator.pub.json"
    )
    rollback = Rollback(
        rt.pool, target, rt.settings, Admission(rt.pool, CONSUMER, coordinator_key), PgStepLedger(rt.pool, CONSUMER)
    )
    rt.consumer.subscribe(topics.ROLLBACK_COMMANDS, rollback.on_request, accept=(RollbackRequested,))


def main() -> None:
    runner.main(NAME, setup, preflight=[refuse_demo_keys])
