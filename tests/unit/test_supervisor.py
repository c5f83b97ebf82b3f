"""The local stack's supervisor: a service that dies is started again after a growing delay and its crashes are
counted; a service that is asked to stop (SIGTERM, `proc.sh stop`) stops for good, child included."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from releasegate_runtime import supervise
from releasegate_runtime.supervise import RestartPolicy, Restarts, Supervisor

REPO = Path(__file__).resolve().parents[2]
WAIT = 20.0  # a bound on waiting for what the test expects, never a synchronisation
FAST = RestartPolicy(initial=0.01, cap=0.04, healthy_after=60.0, stop_timeout=5.0)


def child_script(tmp_path: Path, crashes: int) -> list[str]:
    """A child that counts its runs, exits 3 on the first `crashes` runs, then runs until SIGTERM (and says so)."""
    script = f"""
n=$(( $(cat runs 2>/dev/null || echo 0) + 1 )); echo $n > runs
[ $n -le {crashes} ] && exit 3
trap 'echo term > got-term; exit 0' TERM
echo $$ > child.pid
while :; do sleep 0.05; done
"""
    return ["/bin/sh", "-c", f"cd {tmp_path} && {script}"]


def state(state_dir: Path, name: str) -> dict:
    try:
        return json.loads((state_dir / f"{name}.json").read_text())
    except FileNotFoundError:
        return {}


async def until(check, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class TestRestartDelays:
    def test_delays_double_from_one_second_up_to_thirty(self):
        restarts = Restarts(RestartPolicy())
        assert [restarts.delay_after(ran_for=2.0) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]

    def test_a_child_that_ran_a_minute_before_it_died_is_restarted_after_one_second_again(self):
        restarts = Restarts(RestartPolicy())
        for _ in range(5):
            restarts.delay_after(ran_for=0.5)
        assert restarts.delay_after(ran_for=61.0) == 1
        assert restarts.delay_after(ran_for=0.5) == 2


class TestSupervisor:
    async def test_a_crashing_child_is_restarted_and_its_crashes_counted(self, tmp_path):
        sup = Supervisor("rg-test", child_script(tmp_path, crashes=3), tmp_path / "state", FAST)
        task = asyncio.create_task(sup.run())
        try:
            await until(
                lambda: (
                    state(tmp_path / "state", "rg-test").get("state") == "running" and (tmp_path / "child.pid").exists()
                ),
                "the fourth run to stay up",
            )
            s = state(tmp_path / "state", "rg-test")
            assert (s["crashes"], s["last_exit"]) == (3, 3)
            assert s["pid"] == int((tmp_path / "child.pid").read_text())
        finally:
            sup.stop()
            await asyncio.wait_for(task, WAIT)
        s = state(tmp_path / "state", "rg-test")
        assert (s["state"], s["crashes"], s["pid"]) == ("stopped", 3, None)
        assert (tmp_path / "runs").read_text().strip() == "4"  # stopping is not a crash: no fifth run
        assert (tmp_path / "got-term").exists()

    async def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout(self, tmp_path):
        policy = RestartPolicy(initial=0.01, cap=0.01, stop_timeout=0.2)
        sup = Supervisor(
            "rg-stubborn",
            ["/bin/sh", "-c", f"trap '' TERM; echo $$ > {tmp_path}/pid; while :; do sleep 0.05; done"],
            tmp_path,
            policy,
        )
        task = asyncio.create_task(sup.run())
        await until(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text().strip(), "the child")
        sup.stop()
        await asyncio.wait_for(task, WAIT)
        assert state(tmp_path, "rg-stubborn")["last_exit"] == -signal.SIGKILL
        assert not alive(int((tmp_path / "pid").read_text()))


class TestCommandLine:
    def test_sigterm_to_the_supervisor_reaches_the_child_and_nothing_restarts(self, tmp_path):
        sup = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "releasegate_runtime.supervise",
                "run",
                "rg-term",
                "--state-dir",
                str(tmp_path / "state"),
                "--",
                *child_script(tmp_path, crashes=0),
            ],
            cwd=REPO,
            start_new_session=True,
            stderr=subprocess.PIPE,
        )
        try:
            asyncio.run(until(lambda: (tmp_path / "child.pid").exists(), "the child"))
            child = int((tmp_path / "child.pid").read_text())
            os.kill(sup.pid, signal.SIGTERM)  # the supervisor alone, not its group
            assert sup.wait(WAIT) == 0
        finally:
            if sup.poll() is None:
                os.killpg(sup.pid, signal.SIGKILL)
                sup.wait()
        assert (tmp_path / "got-term").exists() and not alive(child)
        assert (tmp_path / "runs").read_text().strip() == "1"
        s = state(tmp_path / "state", "rg-term")
        assert (s["state"], s["crashes"]) == ("stopped", 0)

    def test_status_shows_pid_uptime_and_crashes(self, tmp_path):
        (tmp_path / "rg-a.json").write_text(
            json.dumps(
                {
                    "name": "rg-a",
                    "supervisor_pid": os.getpid(),
                    "state": "running",
                    "pid": 4242,
                    "started_at": 1000.0,
                    "crashes": 2,
                    "last_exit": -9,
                    "restart_at": None,
                }
            )
        )
        (tmp_path / "rg-b.json").write_text(
            json.dumps(
                {
                    "name": "rg-b",
                    "supervisor_pid": 2**22 + 1,
                    "state": "running",
                    "pid": 4243,
                    "started_at": 1000.0,
                    "crashes": 0,
                    "last_exit": None,
                    "restart_at": None,
                }
            )
        )
        assert supervise.describe("rg-a", tmp_path, now=1000.0 + 3725).split() == [
            "rg-a",
            "running",
            "pid",
            "4242",
            "up",
            "1h02m",
            "crashes",
            "2",
            "last",
            "exit",
            "signal",
            "SIGKILL",
        ]
        assert "down (supervisor gone)" in supervise.describe("rg-b", tmp_path)
        assert supervise.describe("rg-c", tmp_path).split() == ["rg-c", "down"]

    def test_names_that_are_not_plain_are_refused(self, tmp_path):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "releasegate_runtime.supervise",
                "status",
                "--state-dir",
                str(tmp_path),
                "../../etc/passwd",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2 and "bad service name" in result.stderr


class TestProcSh:
    """`proc.sh stop NAME` stops the supervisor and its child, even when the supervisor died alone."""

    def _start(self, run_dir: Path, name: str) -> tuple[int, Path]:
        env = {**os.environ, "RG_RUN_DIR": str(run_dir)}
        marker = run_dir / f"{name}.child"
        subprocess.run(
            [
                "bash",
                str(REPO / "deploy/proc.sh"),
                "start",
                name,
                "--",
                sys.executable,
                "-m",
                "releasegate_runtime.supervise",
                "run",
                name,
                "--",
                "/bin/sh",
                "-c",
                f"echo $$ > {marker}; while :; do sleep 0.05; done",
            ],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
        asyncio.run(until(lambda: marker.exists() and marker.read_text().strip(), "the child"))
        return int((run_dir / "pids" / f"{name}.pid").read_text()), marker

    def _stop(self, run_dir: Path, name: str) -> None:
        subprocess.run(
            ["bash", str(REPO / "deploy/proc.sh"), "stop", "-t", "5", name],
            cwd=REPO,
            env={**os.environ, "RG_RUN_DIR": str(run_dir)},
            check=True,
            capture_output=True,
        )

    def test_stop_ends_the_supervisor_and_the_child(self, tmp_path):
        supervisor, marker = self._start(tmp_path, "rg-proc")
        child = int(marker.read_text())
        self._stop(tmp_path, "rg-proc")
        assert not alive(supervisor) and not alive(child)
        s = state(tmp_path / "supervise", "rg-proc")
        assert (s["state"], s["crashes"]) == ("stopped", 0)  # the child died of the same stop: not a crash

    def test_stop_ends_the_child_of_a_supervisor_killed_alone(self, tmp_path):
        supervisor, marker = self._start(tmp_path, "rg-orphan")
        child = int(marker.read_text())
        os.kill(supervisor, signal.SIGKILL)
        self._stop(tmp_path, "rg-orphan")
        assert not alive(child)
