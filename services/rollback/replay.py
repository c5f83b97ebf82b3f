"""Replay by hand (the restore runbook): re-apply a service's business events of an environment since a point in
time to its database, with the replayer its catalog entry names, and print the report.

`python -m services.rollback.replay --since 2026-11-27T10:00:00+00:00 [--environment production] [--service shop]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime

from contracts import topics
from contracts.names import check_name
from releasegate_platform.catalog import Catalog
from releasegate_platform.pgtools import postgres
from releasegate_platform.replay import EventLog, ReplayReport, load_replayer, replay
from releasegate_runtime.settings import ServiceSettings


async def run(settings: ServiceSettings, service: str, environment: str, since: datetime) -> ReplayReport:
    entry = Catalog(settings.catalog_dir).get(service)
    database, replayer = postgres.database_of(entry), load_replayer(entry)
    scan = await EventLog(settings, topics.SHOP_EVENTS).events_since(replayer, service, environment, since)
    conn = await postgres.connect(settings.database_url, database)
    try:
        return await replay(replayer, conn, scan)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.rollback.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--since", type=datetime.fromisoformat, required=True)
    parser.add_argument("--environment", default="production")
    parser.add_argument("--service", default="shop", help="catalog service whose database receives the events")
    args = parser.parse_args()
    report = asyncio.run(run(ServiceSettings(), args.service, check_name("environment", args.environment), args.since))
    print(json.dumps(report.as_evidence(), indent=2))


if __name__ == "__main__":
    main()
