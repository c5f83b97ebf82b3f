"""Stopping and starting the local stack's infrastructure under a running release, the way `deploy/stack.sh`
does it: Kafka is a `deploy/proc.sh` process (stopped as `stack.sh down` stops it, a controlled shutdown), and
PostgreSQL is stopped with pg_ctl in fast mode (sessions cut, as a crash or a failover would); `stack.sh up`
starts whatever is not healthy and waits until it is."""

from __future__ import annotations

import glob
import os
import shlex
import subprocess
from pathlib import Path

from tests.conftest import REPO

PROC = REPO / "deploy" / "proc.sh"
STACK = REPO / "deploy" / "stack.sh"
PG_DATA = REPO / ".run" / "pg" / "data"


def _run(*argv: str, timeout: float) -> None:
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(argv)}: {out.stdout[-2000:]}{out.stderr[-2000:]}"


def stop_kafka() -> None:
    _run("bash", str(PROC), "stop", "-t", "30", "kafka", timeout=60)


def stop_postgres() -> None:
    """The primary only (the standby keeps running and reconnects by itself)."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    _run(*as_postgres, str(_pg_ctl()), "-D", str(PG_DATA), "-m", "fast", "-w", "-t", "60", "stop", timeout=90)


def _pg_ctl() -> Path:
    """The pg_ctl beside the running server's binary (postmaster.opts names it), else the newest installed."""
    try:
        server = Path(shlex.split((PG_DATA / "postmaster.opts").read_text())[0])
        if (server.parent / "pg_ctl").is_file():
            return server.parent / "pg_ctl"
    except (OSError, IndexError, ValueError):
        pass
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    assert installed, "pg_ctl not found under /usr/lib/postgresql"
    return Path(installed[-1])


def start_infrastructure() -> None:
    """`deploy/stack.sh up`: starts what is down, waits until everything is healthy."""
    _run("bash", str(STACK), "up", timeout=300)


def infrastructure_healthy() -> bool:
    return subprocess.run(["bash", str(STACK), "status"], cwd=REPO, capture_output=True, timeout=60).returncode == 0
