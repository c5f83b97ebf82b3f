"""Faults the fault tests and the chaos soak (bench/chaos.py) inject into the local stack, and the audit oracles
they check afterwards.

Stopping and starting the infrastructure the way `deploy/stack.sh` does it: Kafka is a `deploy/proc.sh` process
(stopped as `stack.sh down` stops it, a controlled shutdown), and PostgreSQL is stopped with pg_ctl in fast mode
(sessions cut, as a crash or a failover would); `stack.sh up` starts whatever is not healthy and waits until it is."""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import subprocess
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROC = REPO / "deploy" / "proc.sh"
STACK = REPO / "deploy" / "stack.sh"
PG_DATA = REPO / ".run" / "pg" / "data"


def _run(*argv: str, timeout: float) -> None:
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stdout[-2000:]}{out.stderr[-2000:]}")


def stop_kafka() -> None:
    _run("bash", str(PROC), "stop", "-t", "30", "kafka", timeout=60)


def stop_postgres() -> None:
    """The primary only (the standby keeps running and reconnects by itself)."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    _run(*as_postgres, str(_pg_ctl()), "-D", str(PG_DATA), "-m", "fast", "-w", "-t", "60", "stop", timeout=90)


def _pg_ctl() -> Path:
    """The pg_ctl beside the running server's binary (postmaster.opts names it), else the newest installed."""
    # no postmaster.opts (the server never ran here) or an unreadable one: fall back to the installed pg_ctl
    with contextlib.suppress(OSError, IndexError, ValueError):
        server = Path(shlex.split((PG_DATA / "postmaster.opts").read_text())[0])
        if (server.parent / "pg_ctl").is_file():
            return server.parent / "pg_ctl"
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not installed:
        raise RuntimeError("pg_ctl not found under /usr/lib/postgresql")
    return Path(installed[-1])


def start_infrastructure() -> None:
    """`deploy/stack.sh up`: starts what is down, waits until everything is healthy."""
    _run("bash", str(STACK), "up", timeout=300)


def infrastructure_healthy() -> bool:
    return subprocess.run(["bash", str(STACK), "status"], cwd=REPO, capture_output=True, timeout=60).returncode == 0


# --- audit oracles ------------------------------------------------------------------------------------------


def repeated_effects(timeline: list[dict]) -> dict[str, int]:
    """Steps whose outcome the audit log records more than once (`<step> done` / `<step> passed`), and
    non-verification steps requested more than once (a deploy or a compensation is never re-issued; a
    verification is, after an operator's resume). A gate that answered `waiting` (for an approval, the end of a
    freeze) is asked again when that comes: its next request is a new evaluation, not the same one twice."""
    done: Counter[str] = Counter()
    requested: Counter[str] = Counter()
    for entry in timeline:
        step, reason = entry.get("step"), entry.get("reason", "")
        if not step:
            continue
        if reason.startswith((f"{step} done", f"{step} passed", f"compensation {step} done")):
            done[step] += 1
        if reason.startswith((f"{step} requested", f"compensation {step} requested")) and not step.startswith("verify"):
            requested[step] += 1
        if reason.startswith(f"{step} waiting"):
            requested[step] -= 1  # that request was answered; the gate is asked again once what it waits for came
    return {
        f"{step} {what}": n
        for what, counts in (("done/passed", done), ("requested", requested))
        for step, n in counts.items()
        if n > 1
    }


def timed_out(timeline: list[dict]) -> list[str]:
    return [e["reason"] for e in timeline if "got no answer before its deadline" in e.get("reason", "")]
