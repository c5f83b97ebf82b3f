"""The stable version of a kubernetes environment lives on its HTTPRoute; the gatekeeper still reads it from the
deployer's `environments` table, so the kubernetes target's `set_stable` is mirrored there too (until the
deployer publishes an environment read model)."""

from __future__ import annotations

import asyncpg

from releasegate_platform.targets.kubernetes import KubernetesTarget

UPSERT = (
    "INSERT INTO environments (service, environment, stable_version, stable_digest) VALUES ($1,$2,$3,$4)"
    " ON CONFLICT (service, environment) DO UPDATE SET stable_version = EXCLUDED.stable_version,"
    " stable_digest = EXCLUDED.stable_digest, updated_at = now()"
)


class MirroredKubernetesTarget(KubernetesTarget):
    def __init__(self, pool: asyncpg.Pool, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._pool = pool

    async def set_stable(self, service: str, environment: str, version: str, digest: str) -> None:
        await super().set_stable(service, environment, version, digest)
        async with self._pool.acquire() as conn:
            await conn.execute(UPSERT, service, environment, version, digest)
