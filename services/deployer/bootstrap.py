"""Reconciles each environment with its recorded stable version: `python -m services.deployer.bootstrap
CANDIDATE_FILE` seeds the first stable version (once) and, after a restart of the stack, restarts stable
instances whose processes are gone and re-points HAProxy at them. Deployer code, so deploy rights stay here."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from releasegate_platform.artifacts import ArtifactStore
from releasegate_platform.catalog import Catalog
from releasegate_platform.haproxy import HAProxy
from releasegate_platform.local_target import LocalTarget, pid_alive
from releasegate_runtime import db, logs
from services.deployer.adapters.launcher import Launcher
from services.deployer.config import DeployerSettings


async def reconcile(candidate_file: Path, *, force: bool = False) -> dict[str, str]:
    """`force` makes the candidate the stable version even where another one is, and ends maintenance mode
    (demo and test resets)."""
    settings = DeployerSettings()
    log = logs.configure("deployer-bootstrap", settings.log_level)
    candidate = json.loads(candidate_file.read_text())
    service, version, digest = candidate["service"], candidate["version"], candidate["artifact"]["digest"]
    entry = Catalog(settings.catalog_dir).get(service)
    pool = await db.create_pool(settings.database_url)
    haproxy = HAProxy(settings.haproxy_admin)
    target = LocalTarget(pool, haproxy, settings.run_dir)
    launcher = Launcher(
        pool,
        haproxy,
        ArtifactStore(settings.artifact_store),
        settings.run_dir,
        settings.shop_env,
        user=settings.candidate_user,
        path=settings.candidate_path,
    )
    result = {}
    try:
        for environment in entry.environments:
            stable = await target.stable(service, environment)
            if stable is None or (force and stable != (version, digest)):
                async with pool.acquire() as conn:
                    await conn.execute(
                        "INSERT INTO environments (service, environment, stable_version, stable_digest)"
                        " VALUES ($1,$2,$3,$4) ON CONFLICT (service, environment) DO UPDATE SET"
                        " stable_version = EXCLUDED.stable_version, stable_digest = EXCLUDED.stable_digest,"
                        " updated_at = now()",
                        service,
                        environment,
                        version,
                        digest,
                    )
                stable = await target.stable(service, environment)
            assert stable is not None
            for inst in await target.live(service, environment):
                if inst.version != stable[0] or not pid_alive(inst.pid) or inst.state != "serving":
                    await target.stop(inst)
            serving = [i for i in await target.live(service, environment) if i.version == stable[0]]
            for inst in serving:
                await haproxy.point(f"{service}_{environment}", inst.slot, inst.port)
                target.register_scrape(inst)
            for _ in range(entry.rollout.instances - len(serving)):
                await launcher.start(service, environment, stable[0], stable[1], None)
            await target.split(service, environment, {stable[0]: 100})
            await target.clear_tenant_routes(service, environment)
            if force and target.maintenance_map(environment).is_file():
                # a demo or test reset also ends a maintenance window a failed restore left on
                await target.maintenance(service, environment, on=False)
            observed = await target.observe(service, environment)
            log.info("environment reconciled", environment=environment, weights=observed.weights)
            result[environment] = stable[0]
    finally:
        await pool.close()
    return result


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--force"]
    if len(args) != 1:
        sys.exit("usage: python -m services.deployer.bootstrap [--force] CANDIDATE_FILE")
    print(json.dumps(asyncio.run(reconcile(Path(args[0]), force="--force" in sys.argv))))


if __name__ == "__main__":
    main()
