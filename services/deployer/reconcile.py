"""Reconciles each environment with its recorded stable version: `python -m services.deployer.bootstrap
CANDIDATE_FILE` (or `-m services.deployer.reconcile`) seeds the first stable version (once) and, after a restart
of the stack, restarts stable replicas that are gone and points traffic at them, on whatever target the catalog
names for each environment. Deployer code, so deploy rights stay here."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from releasegate_platform.catalog import Catalog
from releasegate_platform.haproxy import HAProxyError
from releasegate_platform.targets.port import Unsupported
from releasegate_runtime import db, logs
from services.deployer import bootstrap
from services.deployer.config import DeployerSettings


async def reconcile(candidate_file: Path, *, force: bool = False) -> dict[str, str]:
    """`force` makes the candidate the stable version even where another one is, and ends maintenance mode
    (demo and test resets)."""
    settings = DeployerSettings()
    log = logs.configure("deployer-bootstrap", settings.log_level)
    candidate = json.loads(await asyncio.to_thread(candidate_file.read_text))
    service, version, digest = candidate["service"], candidate["version"], candidate["artifact"]["digest"]
    entry = Catalog(settings.catalog_dir).get(service)
    pool = await db.create_pool(settings.database_url)
    directory, _ = bootstrap.targets(settings, pool)
    published = bootstrap.publisher(pool, directory)
    result = {}
    try:
        for environment in entry.environments:
            target = directory(service, environment)
            stable = await target.stable(service, environment)
            if stable is None or (force and stable != (version, digest)):
                await target.set_stable(service, environment, version, digest)
                stable = (version, digest)
            for other in await target.versions(service, environment):
                if other != stable[0]:
                    await target.retire(service, environment, other)
            await target.run_version(service, environment, stable[0], stable[1], None, entry.rollout.instances)
            await target.shift(service, environment, {stable[0]: 100})
            await target.clear_tenant_routes(service, environment)
            if force:
                # a demo or test reset also ends a maintenance window a failed restore left on
                try:
                    await target.maintenance(service, environment, on=False)
                except (HAProxyError, Unsupported):
                    pass  # the environment has no maintenance mode to end
            observed = await target.observe(service, environment)
            await published(service, environment)
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
