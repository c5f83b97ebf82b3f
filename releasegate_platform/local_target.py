"""The `local` deployment target shared by deployer and rollback: instances recorded in PostgreSQL, served by
HAProxy slots, processes on this machine. Starting new versions is the deployer's alone (see its adapters);
this module only shifts weights, stops instances and reads back what is really serving.

Every HAProxy command and file path here is built from names checked against `contracts.names.NAME` (service,
environment, tenant, version, slot): a name that could split a runtime API command or leave the run folder is
refused with `UnsafeArgument` (an HAProxyError, so the step fails with the reason) before anything changes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from contracts.events import ObservedState
from contracts.names import check_name
from releasegate_platform.haproxy import HAProxy, HAProxyError, UnsafeArgument


@dataclass(frozen=True)
class Instance:
    id: int
    service: str
    environment: str
    version: str
    digest: str
    slot: str
    port: int
    pid: int | None
    state: str


def checked_name(kind: str, value: object) -> str:
    """`value` if it is a plain name (contracts.names.NAME); UnsafeArgument naming `kind` otherwise."""
    try:
        return check_name(kind, value)
    except ValueError as exc:
        raise UnsafeArgument(f"refusing {exc}") from None


def backend_for(service: str, environment: str) -> str:
    return f"{checked_name('service', service)}_{checked_name('environment', environment)}"


def wave_backend_for(service: str, environment: str) -> str:
    """Backend holding the candidate's instances for the tenants moved so far (tenant-phased releases)."""
    return f"{backend_for(service, environment)}_wave"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def stop_process(pid: int | None, grace_seconds: float = 10.0) -> None:
    if not pid_alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while pid_alive(pid) and time.monotonic() < deadline:  # noqa: ASYNC110 -- polls state outside this process; no event to await
        await asyncio.sleep(0.1)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def bundle_process(pid: int | None, run_dir: Path) -> bool:
    """A live process running from one of the deployer's bundle folders: a candidate instance, not an unrelated
    process that was given a recycled pid (or that a tampered pid file names)."""
    if not pid_alive(pid):
        return False
    try:
        return Path(f"/proc/{pid}/cwd").resolve().is_relative_to((run_dir / "bundles").resolve())
    except OSError:
        return False


def _recorded_pid(pid_file: Path, run_dir: Path) -> int | None:
    """The pid in the file, only if it is a candidate instance's process."""
    try:
        text = pid_file.read_text().strip()
    except OSError:
        return None
    pid = int(text) if text.isdigit() else None
    return pid if bundle_process(pid, run_dir) else None


class LocalTarget:
    def __init__(self, pool: asyncpg.Pool, haproxy: HAProxy, run_dir: Path) -> None:
        self.pool, self.haproxy, self.run_dir = pool, haproxy, run_dir

    async def live(self, service: str, environment: str) -> list[Instance]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, service, environment, version, digest, slot, port, pid, state FROM instances"
                " WHERE service = $1 AND environment = $2 AND state <> 'stopped' ORDER BY id",
                service,
                environment,
            )
        return [Instance(**dict(r)) for r in rows]

    async def stable(self, service: str, environment: str) -> tuple[str, str] | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT stable_version, stable_digest FROM environments WHERE service = $1 AND environment = $2",
                service,
                environment,
            )
        return (row["stable_version"], row["stable_digest"]) if row else None

    async def split(self, service: str, environment: str, percent: dict[str, int]) -> None:
        """Give each version its percent of traffic, spread over its serving instances."""
        backend = backend_for(service, environment)
        for version in percent:
            checked_name("version", version)
        instances = [i for i in await self.live(service, environment) if i.state == "serving"]
        for version, share in percent.items():
            mine = [i for i in instances if i.version == version]
            for inst in mine:
                weight = round(share / len(mine))
                await self.haproxy.set_weight(backend, inst.slot, weight)
                await self.haproxy.set_state(backend, inst.slot, "ready" if weight > 0 else "drain")

    def tenant_map(self, environment: str) -> Path | None:
        path = self.run_dir / "haproxy" / f"tenants-{checked_name('environment', environment)}.map"
        return path if path.is_file() else None

    async def route_tenants(self, service: str, environment: str, tenants: list[str]) -> None:
        """Send these tenants to the candidate (the wave backend); everyone else stays where they are. Every
        tenant is checked before the first is routed, so a bad one moves nobody."""
        wave = wave_backend_for(service, environment)
        checked = [checked_name("tenant", tenant) for tenant in tenants]
        tenant_map = self.tenant_map(environment)
        if tenant_map is None:
            raise HAProxyError(f"{environment} has no tenant routing map; tenant-phased releases are not possible")
        for tenant in checked:
            await self.haproxy.map_set(str(tenant_map), tenant, wave)

    async def routed_tenants(self, environment: str) -> list[str]:
        tenant_map = self.tenant_map(environment)
        return sorted(await self.haproxy.map_entries(str(tenant_map))) if tenant_map else []

    async def clear_tenant_routes(self, service: str, environment: str) -> None:
        """No tenant (nor cookie) routing to a candidate any more: the map is emptied, wave slots retired."""
        wave, tenant_map = wave_backend_for(service, environment), self.tenant_map(environment)
        if tenant_map is None:
            return
        await self.haproxy.map_clear(str(tenant_map))
        for inst in await self.live(service, environment):
            await self.haproxy.set_state(wave, inst.slot, "maint")

    def maintenance_map(self, environment: str) -> Path:
        return self.run_dir / "haproxy" / f"maintenance-{checked_name('environment', environment)}.map"

    async def maintenance(self, service: str, environment: str, on: bool) -> None:
        """Maintenance mode: HAProxy answers every request of the environment 503 itself (no write gets through)."""
        service, path = checked_name("service", service), self.maintenance_map(environment)
        if not path.is_file():
            raise HAProxyError(f"{environment} has no maintenance map; writes cannot be stopped there")
        if on:
            await self.haproxy.map_set(str(path), service, "1")
        elif service in await self.haproxy.map_entries(str(path)):
            await self.haproxy.map_del(str(path), service)

    def pid_file(self, inst: Instance) -> Path:
        """Where the instance's process wrote its pid as it started (the launcher empties it before a start)."""
        return (
            self.run_dir
            / "pids"
            / f"{backend_for(inst.service, inst.environment)}-{checked_name('slot', inst.slot)}.pid"
        )

    async def stop(self, inst: Instance) -> None:
        backend = backend_for(inst.service, inst.environment)
        await self.haproxy.set_weight(backend, inst.slot, 0)
        await self.haproxy.set_state(backend, inst.slot, "maint")
        if self.tenant_map(inst.environment) is not None:
            await self.haproxy.set_state(wave_backend_for(inst.service, inst.environment), inst.slot, "maint")
        pid_file = self.pid_file(inst)
        # A deployer killed between starting the process and recording its pid left only the pid file: without it
        # the process would outlive its stopped row, holding the port a later instance is given.
        await stop_process(inst.pid if inst.pid is not None else _recorded_pid(pid_file, self.run_dir))
        async with self.pool.acquire() as conn:
            await conn.execute("UPDATE instances SET state = 'stopped', stopped_at = now() WHERE id = $1", inst.id)
        pid_file.unlink(missing_ok=True)
        self.scrape_file(inst).unlink(missing_ok=True)

    def scrape_file(self, inst: Instance) -> Path:
        backend = backend_for(inst.service, inst.environment)
        return self.run_dir / "prometheus" / "targets" / f"{backend}-{checked_name('slot', inst.slot)}.json"

    def register_scrape(self, inst: Instance) -> None:
        """Tell Prometheus (file_sd) to scrape this instance, labelled with its environment and slot."""
        path = self.scrape_file(inst)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                [
                    {
                        "targets": [f"127.0.0.1:{inst.port}"],
                        "labels": {"service": inst.service, "environment": inst.environment, "slot": inst.slot},
                    }
                ]
            )
        )

    async def observe(self, service: str, environment: str) -> ObservedState:
        """Traffic share per version as HAProxy reports it, plus the instances behind each slot."""
        backend = backend_for(service, environment)
        by_slot = {i.slot: i for i in await self.live(service, environment)}
        weights: dict[str, int] = {}
        serving = []
        for srv in await self.haproxy.servers(backend):
            inst = by_slot.get(srv.name)
            if inst is None or srv.maintenance:
                continue
            weights[inst.version] = weights.get(inst.version, 0) + srv.weight
            serving.append(
                {
                    "slot": srv.name,
                    "version": inst.version,
                    "port": srv.port,
                    "weight": srv.weight,
                    "up": srv.operational,
                    "pid": inst.pid,
                }
            )
        total = sum(weights.values()) or 1
        stable = await self.stable(service, environment)
        return ObservedState(
            weights={v: round(100 * w / total) for v, w in weights.items()},
            instances=serving,
            stable_version=stable[0] if stable else None,
            tenants_on_candidate=await self.routed_tenants(environment),
        )
