"""Starts a bundle as a detached process on a free HAProxy slot and waits until it is healthy."""
from __future__ import annotations

from collections.abc import Callable

import asyncio
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import asyncpg
import httpx

from services.common.artifacts import ArtifactStore
from services.common.haproxy import HAProxy
from services.common.local_target import (
    Instance, LocalTarget, backend_for, pid_alive, stop_process, wave_backend_for,
)
from services.deployer.domain import DeployError

SLOTS = [f"s{i}" for i in range(1, 7)]
PORT_BASE = 20100
HEALTH_TIMEOUT_SECONDS = 45.0


class Launcher:
    def __init__(self, pool: asyncpg.Pool, haproxy: HAProxy, store: ArtifactStore, run_dir: Path,
                 env: Callable[[str], dict[str, str]]) -> None:
        self._pool, self._haproxy, self._store, self._run, self._env = pool, haproxy, store, run_dir, env

    def unpack(self, digest: str) -> tuple[Path, dict]:
        """Re-verify the digest, then extract once per digest (read-only afterwards)."""
        archive = self._store.verify(digest)
        target = self._run / "bundles" / digest.split(":")[1]
        if not (target / "bundle.json").is_file():
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        return target, json.loads((target / "bundle.json").read_text())

    async def start(self, service: str, environment: str, version: str, digest: str,
                    release_id: str | None) -> Instance:
        folder, manifest = await asyncio.to_thread(self.unpack, digest)
        if manifest.get("service") != service:
            raise DeployError(f"bundle {digest} is for service {manifest.get('service')!r}, not {service!r}")
        if manifest.get("version") != version:
            raise DeployError(f"bundle {digest} carries version {manifest.get('version')!r}, not {version!r}")
        inst = await self._claim_slot(service, environment, version, digest, release_id)
        backend = backend_for(service, environment)
        pidfile = self._run / "pids" / f"{backend}-{inst.slot}.pid"
        log = self._run / "logs" / f"{backend}-{inst.slot}-{version}.log"
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        pidfile.unlink(missing_ok=True)
        env = {**os.environ, **self._env(environment), "SHOP_PORT": str(inst.port), "SHOP_ENVIRONMENT": environment,
               "SHOP_INSTANCE_ID": f"{environment}-{inst.slot}-{version}"}
        entry = " ".join(manifest["entrypoint"])
        # setsid --fork detaches the instance from the deployer (init reaps it); it writes its own pid.
        with log.open("ab") as out:
            subprocess.run(["setsid", "--fork", "sh", "-c", f'echo $$ > "{pidfile}"; exec {entry}'],
                           cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
        pid = await self._read_pid(pidfile)
        async with self._pool.acquire() as conn:
            await conn.execute("UPDATE instances SET pid = $2 WHERE id = $1", inst.id, pid)
        try:
            await self._wait_healthy(inst.port, pid, log)
            await self._haproxy.point(backend, inst.slot, inst.port)
            await self._haproxy.set_weight(backend, inst.slot, 0)
            await self._haproxy.set_state(backend, inst.slot, "ready")
            if (self._run / "haproxy" / f"tenants-{environment}.map").is_file():
                wave = wave_backend_for(service, environment)
                await self._haproxy.point(wave, inst.slot, inst.port)
                await self._haproxy.set_state(wave, inst.slot, "ready")
        except Exception:
            await stop_process(pid)
            async with self._pool.acquire() as conn:
                await conn.execute("UPDATE instances SET state = 'stopped', stopped_at = now() WHERE id = $1",
                                   inst.id)
            raise
        async with self._pool.acquire() as conn:
            await conn.execute("UPDATE instances SET state = 'serving' WHERE id = $1", inst.id)
        serving = Instance(inst.id, service, environment, version, digest, inst.slot, inst.port, pid, "serving")
        LocalTarget(self._pool, self._haproxy, self._run).register_scrape(serving)
        return serving

    async def _claim_slot(self, service: str, environment: str, version: str, digest: str,
                          release_id: str | None) -> Instance:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"slots:{environment}")
            used = {r["slot"] for r in await conn.fetch(
                "SELECT slot FROM instances WHERE environment = $1 AND state <> 'stopped'", environment)}
            ports = {r["port"] for r in await conn.fetch("SELECT port FROM instances WHERE state <> 'stopped'")}
            free = [s for s in SLOTS if s not in used]
            if not free:
                raise DeployError(f"no free HAProxy slot in {backend_for(service, environment)}")
            port = next(p for p in range(PORT_BASE, PORT_BASE + 100) if p not in ports)
            row = await conn.fetchrow(
                "INSERT INTO instances (service, environment, version, digest, release_id, slot, port, state)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,'starting') RETURNING id",
                service, environment, version, digest, release_id, free[0], port)
        return Instance(row["id"], service, environment, version, digest, free[0], port, None, "starting")

    @staticmethod
    async def _read_pid(pidfile: Path) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                return int(pidfile.read_text().strip())
            except (OSError, ValueError):
                await asyncio.sleep(0.05)
        raise DeployError(f"instance did not write its pid to {pidfile}")

    @staticmethod
    async def _wait_healthy(port: int, pid: int, log: Path) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if not pid_alive(pid):
                    tail = log.read_text(errors="replace").splitlines()[-5:]
                    raise DeployError(f"instance exited before becoming healthy: {' | '.join(tail)}")
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise DeployError(f"instance on port {port} not healthy within {HEALTH_TIMEOUT_SECONDS:.0f}s")
