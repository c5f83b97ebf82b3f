"""Prepares a running stack for releasegate: the bus policy on the broker (topics partitioned by release id,
a SCRAM credential per principal, exactly the declared ACLs) and the PostgreSQL schema. Idempotent:
`python -m releasegate_runtime.init_stack`."""

from __future__ import annotations

import asyncio

from releasegate_runtime import bus_admin, db
from releasegate_runtime.bus import BusPolicy
from releasegate_runtime.settings import ServiceSettings


def apply_bus_policy(settings: ServiceSettings) -> bus_admin.Applied:
    admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)
    return bus_admin.apply(BusPolicy.load(settings.bus_policy_file), admin, settings.secrets_dir)


async def init(settings: ServiceSettings) -> None:
    applied = await asyncio.to_thread(apply_bus_policy, settings)
    pool = await db.create_pool(settings.database_url)
    try:
        await db.apply_schema(pool)
    finally:
        await pool.close()
    print(
        f"topics created: {', '.join(applied.topics_created) or 'none (all present)'}; "
        f"{len(applied.users)} principals; ACLs +{applied.acls_created} -{applied.acls_deleted}; schema applied"
    )


if __name__ == "__main__":
    asyncio.run(init(ServiceSettings()))
