"""Verifier process: the core `business-kpis` verifier on the releasegate SDK (every service, every
environment, a look every tick, synthetic journeys too), with its business-event ingest and HAProxy request
log receiver; wired in `bootstrap.py`."""

from __future__ import annotations

from releasegate_platform.identity import refuse_demo_keys
from services.verifier.bootstrap import NAME, build
from services.verifier.config import VerifierSettings

__all__ = ["NAME", "build", "main"]


def main() -> None:
    settings = VerifierSettings()
    build(settings).run(settings, preflight=[refuse_demo_keys])
