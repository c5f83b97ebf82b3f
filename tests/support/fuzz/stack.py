"""The end-to-end stack (every service and team verifier as its own OS process, synthetic shoppers, recovery
proven, v1 stable) with each service's /health on its own port, so a campaign or a fault can ask afterwards
whether every process is still alive and healthy. Built from the end-to-end harness's pieces."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from releasegate_cli import client
from releasegate_runtime.settings import ServiceSettings
from tests.conftest import REPO, Service, wait_until
from tests.e2e.conftest import (
    CANDIDATES,
    LOCAL_CALENDAR,
    PRODUCTION,
    RELEASE_MANAGER_KEY,
    SERVICES,
    STAGING,
    VERIFIERS,
    prove_recovery,
)
from tests.support.services import start_shopper

# /health ports of the processes a test starts: apart from deploy/services.sh's 18501-18509, so a stack left
# running by `make up` cannot answer for them.
HEALTH_BASE = 18600


@dataclass
class WatchedStack:
    services: dict[str, Service]
    ports: dict[str, int]
    env: dict[str, str]
    shoppers: list[subprocess.Popen] = field(default_factory=list)

    def crashed(self) -> dict[str, int]:
        """Processes that exited (name → exit code): nothing a test started should ever exit by itself."""
        return {
            name: svc.proc.returncode
            for name, svc in self.services.items()
            if svc.proc is not None and svc.proc.poll() is not None
        }

    async def unhealthy(self) -> dict[str, str]:
        """Services whose GET /health is not 200 (name → what it answered)."""
        out: dict[str, str] = {}
        async with httpx.AsyncClient(timeout=5) as http:
            for name, port in self.ports.items():
                try:
                    r = await http.get(f"http://127.0.0.1:{port}/health")
                    if r.status_code != 200:
                        out[name] = f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    out[name] = f"no answer ({type(exc).__name__})"
        return out

    def restart(self, name: str) -> Service:
        """Start `name` again after a test stopped or killed it (same environment and /health port)."""
        self.services[name] = _start(name, self.services[name].module.split(".")[0], self.env, self.ports[name])
        return self.services[name]


def _start(name: str, package: str, env: dict[str, str], port: int) -> Service:
    return Service(name, {**env, "RG_HEALTH_PORT": str(port)}, package=package).start()


@contextlib.asynccontextmanager
async def watched_stack(
    settings: ServiceSettings, env: dict[str, str] | None = None, *, extra: tuple[str, ...] = ()
) -> AsyncIterator[WatchedStack]:
    """`extra`: services started besides the release path's (e.g. the notifier)."""
    env = {"RG_CALENDAR_FILE": str(LOCAL_CALENDAR), **(env or {})}
    names = [(n, "services") for n in (*SERVICES, *extra)] + [(n, "verifiers") for n in VERIFIERS]
    ports = {name: HEALTH_BASE + i for i, (name, _) in enumerate(names, start=1)}
    stack = WatchedStack({name: _start(name, package, env, ports[name]) for name, package in names}, ports, env)
    try:
        stack.shoppers = [
            start_shopper(PRODUCTION, "mixed", 16, "acme,globex,initech"),
            start_shopper(STAGING, "visa", 6, "qa"),
        ]

        async def all_healthy() -> bool:
            return not stack.crashed() and not await stack.unhealthy()

        await wait_until(all_healthy, 90, "every service to answer /health with 200")
        leftovers = await client.abort_in_flight(
            settings, "carol", "clean start for the hostile-input tests", key=RELEASE_MANAGER_KEY
        )
        await wait_until(lambda: client.all_ended(settings, leftovers), 240, f"left-over releases {leftovers} to end")
        await asyncio.to_thread(prove_recovery, env)
        await asyncio.to_thread(stable_v1, env)
        yield stack
    finally:
        for p in stack.shoppers:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(15)
        for svc in stack.services.values():
            svc.stop()


def stable_v1(env: dict[str, str]) -> None:
    """v1 as the stable version of staging and production, as every end-to-end scenario starts."""
    subprocess.run(
        [sys.executable, "-m", "services.deployer.bootstrap", "--force", str(CANDIDATES / "shop-v1.json")],
        cwd=REPO,
        check=True,
        capture_output=True,
        env={**os.environ, **env},
    )
