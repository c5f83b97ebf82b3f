"""What a fault test checks once the release has ended: HAProxy serves what the saga says to every tenant, the
workload is exactly the stable version's (no orphan process, no stray weight), and no effect happened twice (each
step requested and done once, as the release's audit log records it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from bench.faults import repeated_effects, timed_out
from releasegate_cli.probes import versions_served
from releasegate_platform.haproxy import HAProxy
from releasegate_platform.local_target import backend_for, bundle_process, pid_alive
from releasegate_runtime.settings import ServiceSettings
from tests.e2e.conftest import PRODUCTION, STAGING

# the tenants the synthetic shoppers use: each is probed by its own Host (an unknown tenant proves nothing: HAProxy
# sends it to stable)
TENANTS = {PRODUCTION: ("acme", "globex", "initech"), STAGING: ("qa",)}


async def served_to_every_tenant(version: str) -> dict[str, dict[str, int]]:
    """Tenant → versions that answered it, for tenants not served `version` alone (empty: consistent)."""
    wrong: dict[str, dict[str, int]] = {}
    for base, tenants in TENANTS.items():
        for tenant in tenants:
            seen = await versions_served(base, 20, tenant=tenant)
            if set(seen) != {version}:
                wrong[tenant] = dict(seen)
    return wrong


async def workload_drift(
    settings: ServiceSettings, pool: asyncpg.Pool, release_id: str, service: str = "shop"
) -> list[str]:
    """How each environment's workload differs from its recorded stable version once `release_id` has ended
    (empty: it does not):
    - every instance not stopped is a serving instance of the stable version, and its process is alive;
    - no process of the release's stopped instances is alive (an orphan candidate), nor one named by a pid file
      that no live instance holds (started by a deployer that died before recording it);
    - HAProxy gives weight only to those instances' slots, and no tenant is routed to a candidate."""
    haproxy, drift = HAProxy(settings.haproxy_admin), []
    async with pool.acquire() as conn:
        stable = dict(
            await conn.fetch("SELECT environment, stable_version FROM environments WHERE service = $1", service)
        )
        rows = await conn.fetch(
            "SELECT environment, version, slot, pid, state FROM instances WHERE service = $1"
            " AND (state <> 'stopped' OR release_id = $2)",
            service,
            release_id,
        )
    live_pids = {r["pid"] for r in rows if r["state"] != "stopped"}
    for environment, version in stable.items():
        mine = [r for r in rows if r["environment"] == environment]
        serving = {r["slot"] for r in mine if r["state"] != "stopped"}
        for r in mine:
            what = f"{environment} {r['version']} instance in {r['slot']} (pid {r['pid']}, {r['state']})"
            if r["state"] != "stopped" and (r["state"] != "serving" or r["version"] != version):
                drift.append(f"{what} is not a serving instance of the stable {version}")
            elif r["state"] != "stopped" and not pid_alive(r["pid"]):
                drift.append(f"{what}: its process is gone")
            elif r["state"] == "stopped" and r["pid"] not in live_pids and bundle_process(r["pid"], settings.run_dir):
                drift.append(f"{what}: its process still runs")
        for server in await haproxy.servers(backend_for(service, environment)):
            if not server.maintenance and server.weight > 0 and server.name not in serving:
                drift.append(f"HAProxy gives {environment} slot {server.name} weight {server.weight}; no instance")
        tenant_map = settings.run_dir / "haproxy" / f"tenants-{environment}.map"
        if tenant_map.is_file():
            if routed := await haproxy.map_entries(str(tenant_map)):
                drift.append(f"tenants still routed to a candidate in {environment}: {sorted(routed)}")
    for name, pid in (await asyncio.to_thread(_pid_files, settings.run_dir, service)).items():
        if pid not in live_pids and bundle_process(pid, settings.run_dir):
            drift.append(f"{name} names running process {pid}, which no live instance holds")
    return drift


def _pid_files(run_dir: Path, service: str) -> dict[str, int]:
    found = {}
    for pid_file in sorted((run_dir / "pids").glob(f"{service}_*.pid")):
        text = pid_file.read_text().strip()
        if text.isdigit():
            found[pid_file.name] = int(text)
    return found


__all__ = ["repeated_effects", "served_to_every_tenant", "timed_out", "workload_drift"]
