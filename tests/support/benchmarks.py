"""Running a benchmark as the README's make target does, for the tests that keep each one from rotting."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """`python ARGS` in the repository; fails the test, with the end of its output, unless it exits 0."""
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out
