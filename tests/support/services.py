"""Releasegate's services as OS processes for the tests, the principals they authenticate as, and polling with a
deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from releasegate_runtime import bus_admin
from releasegate_runtime.bus import BusPolicy
from releasegate_runtime.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
LOGS = REPO / ".run" / "logs"


def as_principal(settings: ServiceSettings, name: str) -> ServiceSettings:
    """The same settings, authenticating to Kafka as `name` (deploy/kafka/acls.yaml; `admin` is the broker's super
    user, used by tests only to provision what an operator would)."""
    return settings.model_copy(update={"principal": name})


async def register_verifier(settings: ServiceSettings, name: str) -> str:
    """Provision a team verifier's principal (credential, result topic, ACLs), as the platform team does with
    `releasegate verifiers register NAME`; returns the principal's name."""
    principal = BusPolicy.load(settings.bus_policy_file).with_verifier(name)
    admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)
    await asyncio.to_thread(bus_admin.register, principal, admin, settings.secrets_dir)
    return principal.name


async def wait_until(
    check: Callable[[], Awaitable[object]], timeout: float, what: str, *, every: float = 0.2
) -> object:
    """Poll `check` every `every` seconds until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


class Service:
    """One releasegate service (or, with `package="verifiers"`, a team verifier) as its own OS process, as
    `deploy/services.sh` starts it."""

    def __init__(self, name: str, env: dict[str, str] | None = None, package: str = "services") -> None:
        self.name, self.env, self.module = name, env or {}, f"{package}.{name}"
        self.proc: subprocess.Popen | None = None
        self.log = LOGS / f"test-{name}.log"

    def start(self) -> Service:
        LOGS.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=REPO,
            env={**os.environ, **self.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_shopper(target: str, cards: str, rate: int, tenants: str, ledger: Path | None = None) -> subprocess.Popen:
    """A synthetic shopper (`shop.shopper`) against `target` until stopped, logging to .run/logs; with `ledger`,
    it writes every order it placed there (the file is emptied first)."""
    log = (LOGS / f"test-shopper-{cards}.log").open("ab")
    argv = [sys.executable, "-m", "shop.shopper", "--target", target, "--rate", str(rate), "--tenants", tenants]
    argv += ["--cards", cards, "--duration", "0"]
    if ledger is not None:
        ledger.unlink(missing_ok=True)
        argv += ["--ledger", str(ledger)]
    return subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
