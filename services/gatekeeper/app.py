"""Gatekeeper process."""

from __future__ import annotations

from releasegate_platform.identity import refuse_demo_keys
from releasegate_runtime import runner
from services.gatekeeper.bootstrap import setup

NAME = "gatekeeper"


def main() -> None:
    runner.main(NAME, setup, preflight=[refuse_demo_keys])
