"""External commands (pg_dump, pg_restore, psql) with a deadline: a command that hangs (a lock it waits for, a
server that stopped answering) is killed with its whole process group, and the caller gets an error saying which
command, after how long, instead of a step that never ends."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence

STDERR_SHOWN = 500


class CommandFailed(Exception):
    """An external command exited with an error, could not start, or was killed at its deadline."""


class CommandTimedOut(CommandFailed):
    """Killed at its deadline: what it did before is unknown (a server may still be finishing its statement)."""


async def run(
    argv: Sequence[str], *, env: Mapping[str, str], timeout: float, what: str, stdin: bytes | None = None
) -> bytes:
    """Run `argv` (no shell) in its own process group; its stdout, or CommandFailed with the end of its stderr."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            start_new_session=True,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise CommandFailed(f"{what}: cannot start {argv[0]}: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        await _kill(proc)
        raise CommandTimedOut(f"{what}: killed after {timeout:g}s without finishing") from None
    except asyncio.CancelledError:
        await _kill(proc)
        raise
    if proc.returncode != 0:
        detail = err.decode("utf-8", "replace").strip()[-STDERR_SHOWN:] or f"exit status {proc.returncode}"
        raise CommandFailed(f"{what} failed: {detail}")
    return out


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group (pg_restore may have started workers) and reap the leader."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    await proc.wait()
