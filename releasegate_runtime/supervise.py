"""A small process supervisor for the local stack: runs one service and restarts it when it exits on its own.

    python -m releasegate_runtime.supervise run NAME [--state-dir DIR] -- CMD ARGS...
    python -m releasegate_runtime.supervise status [--state-dir DIR] NAME...

Restarts wait 1 s, doubling to 30 s; a child that ran 60 s before it died starts over at 1 s. SIGTERM or SIGINT
is forwarded to the child, which is then not restarted (`proc.sh stop NAME` signals the supervisor's whole
process group, the child included). What `status` shows (pid, uptime, crashes) is kept in DIR/NAME.json
(default `$RG_RUN_DIR/supervise`, else `<repo>/.run/supervise`), rewritten atomically at every change."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from releasegate_runtime.backoff import Backoff

REPO = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
STOP_GRACE_SECONDS = 0.5


@dataclass(frozen=True)
class RestartPolicy:
    initial: float = 1.0
    cap: float = 30.0
    healthy_after: float = 60.0  # a child that ran this long counts as healthy: the next delay starts over
    stop_timeout: float = 10.0  # after forwarding SIGTERM, how long before the child is killed


class Restarts:
    """How long to wait before starting a child that died: `initial`, doubling up to `cap`; a child that ran
    `healthy_after` seconds before it died starts the sequence over."""

    def __init__(self, policy: RestartPolicy) -> None:
        self._healthy_after = policy.healthy_after
        self._backoff = Backoff(policy.initial, policy.cap)

    def delay_after(self, ran_for: float) -> float:
        if ran_for >= self._healthy_after:
            self._backoff.reset()
        return self._backoff.next_delay()


@dataclass
class State:
    """What `status` reports; `state` is running, restarting, stopping or stopped."""

    name: str
    supervisor_pid: int
    state: str = "starting"
    pid: int | None = None
    started_at: float | None = None  # wall clock (epoch seconds) of the child's current run
    crashes: int = 0
    last_exit: int | None = None  # exit status of the last run; negative: killed by that signal
    restart_at: float | None = None


def state_dir_default() -> Path:
    return Path(os.environ.get("RG_RUN_DIR") or REPO / ".run") / "supervise"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(f"bad service name {name!r}: letters, digits, '.', '_', '-' only, at most 63")
    return name


class Supervisor:
    """Runs `argv` until `stop()`, starting it again (after `Restarts`' delay) each time it exits on its own."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        state_dir: Path,
        policy: RestartPolicy = RestartPolicy(),
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not argv:
            raise ValueError("no command to supervise")
        self._argv, self._policy, self._clock, self._wall = argv, policy, clock, wall
        self._file = state_dir / f"{check_name(name)}.json"
        self.state = State(name=name, supervisor_pid=os.getpid())
        self._stop = asyncio.Event()
        self._child: asyncio.subprocess.Process | None = None

    def stop(self) -> None:
        """Stop supervising: the child gets SIGTERM (then SIGKILL after `stop_timeout`), no restart follows."""
        self._stop.set()

    async def run(self) -> None:
        """Supervise until `stop()`."""
        restarts = Restarts(self._policy)
        self._file.parent.mkdir(parents=True, exist_ok=True)
        try:
            while not self._stop.is_set():
                ran_for, status = await self._run_child()
                if await self._stopping(within=STOP_GRACE_SECONDS):
                    break
                self.state.crashes += 1
                delay = restarts.delay_after(ran_for)
                self._save(state="restarting", pid=None, last_exit=status, restart_at=self._wall() + delay)
                _say(
                    f"{self.state.name}: exited with {_exit_text(status)} after {ran_for:.1f}s "
                    f"(crash {self.state.crashes}); restarting in {delay:.0f}s"
                )
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass
        finally:
            self._save(state="stopped", pid=None, restart_at=None)

    async def _stopping(self, within: float) -> bool:
        """Whether a stop is asked for within `within` seconds: `proc.sh stop` signals the child and the supervisor
        at once, and the child's death may be seen first; that is a stop, not a crash."""
        try:
            await asyncio.wait_for(self._stop.wait(), within)
        except TimeoutError:
            return False
        return True

    async def _run_child(self) -> tuple[float, int]:
        """Start the child and wait for it to end; (seconds it ran, exit status)."""
        started = self._clock()
        self._child = await asyncio.create_subprocess_exec(*self._argv)
        self._save(state="running", pid=self._child.pid, started_at=self._wall(), restart_at=None)
        _say(f"{self.state.name}: started pid {self._child.pid}")
        waiter = asyncio.create_task(self._child.wait())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():  # stopping: SIGTERM (again, if `proc.sh stop` signalled the group), then SIGKILL
                self._save(state="stopping")
                self._child.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), self._policy.stop_timeout)
                except TimeoutError:
                    self._child.kill()
            status = await waiter
        finally:
            stopper.cancel()
            if self._child.returncode is None:  # the supervisor itself is being cancelled: leave nothing behind
                self._child.kill()
        self._save(last_exit=status)
        return self._clock() - started, status

    def _save(self, **changes: object) -> None:
        for key, value in changes.items():
            setattr(self.state, key, value)
        tmp = self._file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self.state)) + "\n")
        tmp.replace(self._file)


def _exit_text(status: int | None) -> str:
    if status is None:
        return "no status"
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"status {status}"


def _say(line: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"=== {stamp} supervise {line}", file=sys.stderr, flush=True)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(name: str, state_dir: Path, now: float | None = None) -> str:
    """One status line: state, child pid, uptime, crash count (and the last exit when it crashed)."""
    path = state_dir / f"{check_name(name)}.json"
    try:
        s = State(**json.loads(path.read_text()))
    except FileNotFoundError:
        return f"{name:<28} down"
    except (ValueError, TypeError) as exc:
        return f"{name:<28} unknown (unreadable {path}: {exc})"
    now = time.time() if now is None else now
    if s.state != "stopped" and not _alive(s.supervisor_pid):
        state = "down (supervisor gone)"
    elif s.state == "running" and s.started_at is not None:
        state = f"running  pid {s.pid}  up {_duration(now - s.started_at)}"
    elif s.state == "restarting" and s.restart_at is not None:
        state = f"restarting in {_duration(max(s.restart_at - now, 0))}"
    else:
        state = s.state
    crashed = f"  last exit {_exit_text(s.last_exit)}" if s.crashes else ""
    return f"{name:<28} {state}  crashes {s.crashes}{crashed}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


async def _supervise(name: str, argv: list[str], state_dir: Path) -> None:
    supervisor = Supervisor(name, argv, state_dir)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop)
    await supervisor.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m releasegate_runtime.supervise",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run CMD under supervision")
    run.add_argument("name")
    run.add_argument("--state-dir", type=Path, default=None)
    status = commands.add_parser("status", help="pid, uptime and crash count of supervised services")
    status.add_argument("--state-dir", type=Path, default=None)
    status.add_argument("names", nargs="+")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args, cmd = parser.parse_args(argv[:split]), argv[split + 1 :]
    state_dir = args.state_dir or state_dir_default()
    names = args.names if args.command == "status" else [args.name]
    for name in names:
        if not NAME.fullmatch(name):
            parser.error(f"bad service name {name!r}: letters, digits, '.', '_', '-' only, at most 63")
    if args.command == "status":
        for name in names:
            print(describe(name, state_dir))
        return 0
    if not cmd:
        parser.error("run needs a command: run NAME -- CMD ARGS...")
    try:
        asyncio.run(_supervise(args.name, cmd, state_dir))
    except OSError as exc:  # the command cannot be started at all: restarting it would not help
        _say(f"{args.name}: cannot start {cmd[0]!r}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
