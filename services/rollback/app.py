"""Rollback process."""
from __future__ import annotations

from contracts import topics
from contracts.events import RollbackRequested
from services.common import runner
from services.common.haproxy import HAProxy
from services.common.local_target import LocalTarget
from services.rollback.handlers import Rollback

NAME = "rollback"


async def setup(rt: runner.Runtime) -> None:
    target = LocalTarget(rt.pool, HAProxy(rt.settings.haproxy_admin), rt.settings.run_dir)
    rt.consumer.subscribe(topics.ROLLBACK_COMMANDS, Rollback(rt.pool, target, rt.settings).on_request,
                          accept=(RollbackRequested,))


def main() -> None:
    runner.main(NAME, setup)
