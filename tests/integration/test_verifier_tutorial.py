"""docs/verifier-tutorial.md, run as written against the real stack in an empty folder: its runnable blocks are
fenced ```python file=PATH (written to PATH), ```console run (each `$ ` command must succeed; `until=TEXT`:
repeated until its output shows TEXT) and ```console background (started as an OS process, stopped at the end).
The scaffolded verifier must then be alive in `releasegate verifiers` and have answered the request by hand."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from contracts import topics
from contracts.events import VerificationFinished
from releasegate_cli.probes import TopicTail
from tests.support.services import LOGS, REPO, as_principal, register_verifier, wait_until

pytestmark = pytest.mark.integration

TUTORIAL = REPO / "docs" / "verifier-tutorial.md"
FENCE = re.compile(r"^```(\w+)[ \t]*([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
NAME = "order-ledger"
COMMAND_TIMEOUT = 120


@dataclass(frozen=True)
class Block:
    language: str
    options: dict[str, str]
    body: str

    @property
    def commands(self) -> list[str]:
        return [line[2:] for line in self.body.splitlines() if line.startswith("$ ")]


def runnable_blocks(text: str) -> list[Block]:
    found = []
    for language, info, body in FENCE.findall(text):
        options = dict(word.partition("=")[::2] for word in info.split())
        if {"run", "background", "file"} & options.keys():
            found.append(Block(language, options, body))
    return found


async def run(command: str, cwd: Path) -> tuple[int, str]:
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    except TimeoutError:
        proc.kill()
        raise
    return proc.returncode, out.decode(errors="replace")


async def listed(cwd: Path) -> dict | None:
    code, out = await run("releasegate verifiers --json", cwd)
    assert code == 0, out
    return next((v for v in json.loads(out) if v["name"] == NAME and v["alive"]), None)


def test_the_tutorial_marks_every_step_it_shows():
    kinds = [(b.language, next(iter(b.options))) for b in runnable_blocks(TUTORIAL.read_text())]
    assert ("console", "background") in kinds and ("python", "file") in kinds
    assert sum(k == ("console", "run") for k in kinds) >= 4


async def test_the_tutorial_runs_as_written(tmp_path, settings, registry_writer):
    principal = await register_verifier(settings, NAME)  # the tutorial registers it again: a no-op
    await registry_writer.follow(NAME)
    results = await TopicTail(as_principal(settings, "coordinator"), topics.results_for(principal)).start()
    background: list[subprocess.Popen] = []
    LOGS.mkdir(parents=True, exist_ok=True)
    try:
        for block in runnable_blocks(TUTORIAL.read_text()):
            if "file" in block.options:
                path = tmp_path / block.options["file"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(block.body)
            elif "background" in block.options:
                for command in block.commands:
                    argv = [sys.executable if a == "python" else a for a in shlex.split(command)]
                    log = (LOGS / f"test-tutorial-{NAME}.log").open("ab")
                    background.append(
                        subprocess.Popen(  # noqa: ASYNC220 (starts the process and returns; nothing waits)
                            argv,
                            cwd=tmp_path,
                            env=os.environ.copy(),
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            else:
                for command in block.commands:
                    until = block.options.get("until")

                    async def succeeds(command=command, until=until) -> bool:
                        code, out = await run(command, tmp_path)
                        assert code == 0, f"`{command}` exited {code}:\n{out[-3000:]}"
                        return until is None or until in out

                    await wait_until(succeeds, COMMAND_TIMEOUT, f"`{command}` to succeed")
        assert all(p.poll() is None for p in background), "the tutorial's verifier stopped"
        entry = await wait_until(lambda: listed(tmp_path), 60, f"{NAME} alive in `releasegate verifiers`")
        assert (entry["services"], entry["environments"], entry["kpis"]) == (
            ["shop"],
            ["production", "staging"],
            ["orders_with_matching_payment"],
        )
        verdict = await results.wait_for(
            lambda e: (
                isinstance(e.data, VerificationFinished)
                and e.data.verifier == NAME
                and e.subject.startswith("tutorial-")
            ),
            30,
        )
        assert verdict is not None, "no verdict from the tutorial's verifier on release.results"
        assert verdict.data.kpis[0].name == "orders_with_matching_payment"
    finally:
        for proc in background:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        await results.stop()
