"""Starts a bundle as a detached process on a free HAProxy slot and waits until it is healthy. Candidate code runs
with least privilege: as its own unprivileged OS user, from a read-only bundle re-hashed before each start, with
an allow-listed environment and a private HOME."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx

from releasegate_platform.artifacts import ArtifactStore
from releasegate_platform.haproxy import HAProxy
from releasegate_platform.local_target import (
    Instance,
    LocalTarget,
    backend_for,
    pid_alive,
    stop_process,
    wave_backend_for,
)
from services.deployer.adapters.bundle_tree import extract, remove_tree, seal, tree_of, tree_problem
from services.deployer.adapters.confinement import (
    as_user,
    candidate_env,
    candidate_user,
    private_home,
    unreachable,
)
from services.deployer.domain import DeployError

SLOTS = [f"s{i}" for i in range(1, 7)]
PORT_BASE = 20100
HEALTH_TIMEOUT_SECONDS = 45.0


class Launcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        haproxy: HAProxy,
        store: ArtifactStore,
        run_dir: Path,
        env: Callable[[str], dict[str, str]],
        *,
        user: str = "rg-candidate",
        path: str | None = None,
    ) -> None:
        """`env`: the SHOP_* settings per environment; `user`: who candidates run as (when we are root);
        `path`: the candidates' PATH (default: ours)."""
        self._pool, self._haproxy, self._store, self._run, self._env = pool, haproxy, store, run_dir, env
        self._user, self._path = user, path

    def unpack(self, digest: str) -> tuple[Path, dict]:
        """Re-verify the archive's digest, extract it once per digest into a read-only folder, and re-hash the
        folder against the archive on every use: a bundle modified on disk is refused, naming the file."""
        archive = self._store.verify(digest)
        target = self._run / "bundles" / digest.split(":")[1]
        if target.is_dir() and target.stat().st_mode & 0o222:
            remove_tree(target)  # extracted before bundles were sealed, or never finished: extract again
        if not target.is_dir():
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            remove_tree(tmp)
            tmp.mkdir(parents=True)
            extract(archive, tmp)
            seal(tmp)
            tmp.rename(target)
        problem = tree_problem(target, *tree_of(archive))
        if problem is not None:
            raise DeployError(f"bundle {digest} was modified on disk: {problem}; refusing to start it")
        return target, json.loads((target / "bundle.json").read_text())

    async def start(
        self, service: str, environment: str, version: str, digest: str, release_id: str | None
    ) -> Instance:
        folder, manifest = await asyncio.to_thread(self.unpack, digest)
        if manifest.get("service") != service:
            raise DeployError(f"bundle {digest} is for service {manifest.get('service')!r}, not {service!r}")
        if manifest.get("version") != version:
            raise DeployError(f"bundle {digest} carries version {manifest.get('version')!r}, not {version!r}")
        shop, user = self._env(environment), candidate_user(self._user)
        inst = await self._claim_slot(service, environment, version, digest, release_id)
        backend = backend_for(service, environment)
        pidfile = LocalTarget(self._pool, self._haproxy, self._run).pid_file(inst)
        logfile = self._run / "logs" / f"{backend}-{inst.slot}-{version}.log"
        pid = None
        try:
            pidfile.parent.mkdir(parents=True, exist_ok=True)
            logfile.parent.mkdir(parents=True, exist_ok=True)
            pidfile.unlink(missing_ok=True)
            home = await asyncio.to_thread(private_home, self._run / "homes" / f"{backend}-{inst.slot}", user)
            env = candidate_env(
                os.environ,
                shop,
                {
                    "SHOP_PORT": str(inst.port),
                    "SHOP_ENVIRONMENT": environment,
                    "SHOP_INSTANCE_ID": f"{environment}-{inst.slot}-{version}",
                },
                home,
                self._path,
            )
            entry = manifest["entrypoint"]
            if user is not None:
                problem = await asyncio.to_thread(unreachable, entry[0], env, user)
                if problem is not None:
                    raise DeployError(f"cannot start {version} as {user.name}: {problem}")
                # a user of its own: candidate code cannot read the deployer's secrets or files
                entry = as_user(user, entry)
            # setsid --fork detaches the instance from the deployer (init reaps it); it writes its own pid (before
            # the user switch, which keeps the pid).
            with logfile.open("ab") as out:
                await asyncio.to_thread(
                    subprocess.run,
                    [
                        "setsid",
                        "--fork",
                        "sh",
                        "-c",
                        f"echo $$ > {shlex.quote(str(pidfile))}; exec {shlex.join(entry)}",
                    ],
                    cwd=folder,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=True,
                )
            pid = await self._read_pid(pidfile)
            async with self._pool.acquire() as conn:
                await conn.execute("UPDATE instances SET pid = $2 WHERE id = $1", inst.id, pid)
            await self._wait_healthy(inst.port, pid, logfile)
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
                await conn.execute("UPDATE instances SET state = 'stopped', stopped_at = now() WHERE id = $1", inst.id)
            raise
        async with self._pool.acquire() as conn:
            await conn.execute("UPDATE instances SET state = 'serving' WHERE id = $1", inst.id)
        serving = Instance(inst.id, service, environment, version, digest, inst.slot, inst.port, pid, "serving")
        LocalTarget(self._pool, self._haproxy, self._run).register_scrape(serving)
        return serving

    async def _claim_slot(
        self, service: str, environment: str, version: str, digest: str, release_id: str | None
    ) -> Instance:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"slots:{environment}")
            used = {
                r["slot"]
                for r in await conn.fetch(
                    "SELECT slot FROM instances WHERE environment = $1 AND state <> 'stopped'", environment
                )
            }
            ports = {r["port"] for r in await conn.fetch("SELECT port FROM instances WHERE state <> 'stopped'")}
            free = [s for s in SLOTS if s not in used]
            if not free:
                raise DeployError(f"no free HAProxy slot in {backend_for(service, environment)}")
            port = next(p for p in range(PORT_BASE, PORT_BASE + 100) if p not in ports)
            row = await conn.fetchrow(
                "INSERT INTO instances (service, environment, version, digest, release_id, slot, port, state)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,'starting') RETURNING id",
                service,
                environment,
                version,
                digest,
                release_id,
                free[0],
                port,
            )
        return Instance(row["id"], service, environment, version, digest, free[0], port, None, "starting")

    @staticmethod
    async def _read_pid(pidfile: Path) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                return int((await asyncio.to_thread(pidfile.read_text)).strip())
            except (OSError, ValueError):
                await asyncio.sleep(0.05)
        raise DeployError(f"instance did not write its pid to {pidfile}")

    @staticmethod
    async def _wait_healthy(port: int, pid: int, log: Path) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if not pid_alive(pid):
                    tail = (await asyncio.to_thread(log.read_text, errors="replace")).splitlines()[-5:]
                    raise DeployError(f"instance exited before becoming healthy: {' | '.join(tail)}")
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise DeployError(f"instance on port {port} not healthy within {HEALTH_TIMEOUT_SECONDS:.0f}s")
