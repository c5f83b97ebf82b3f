"""The gatekeeper's parity adapter: probes staging and production (releasegate_platform.parity_probes), compares
them against the accepted differences (deploy/parity.yaml, re-read on every request) and hands the policy the
report. Anything that goes wrong becomes an error in the report, which blocks: unmeasured parity never passes."""

from __future__ import annotations

from typing import Any

import structlog

from releasegate_platform import parity, parity_probes
from releasegate_platform.catalog import ServiceEntry
from releasegate_platform.regional import RegionalSet
from releasegate_runtime.settings import ServiceSettings

log = structlog.get_logger()


class ProbedParity:
    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings

    async def report(self, entry: ServiceEntry, regional: RegionalSet | None) -> dict[str, Any]:
        try:
            accepted = parity.load_accepted(self._settings.parity_file)
        except parity.ParityFileError as exc:
            return parity.unmeasured(str(exc))
        try:
            staging, production = await parity_probes.measure(self._settings, entry, regional)
        except (TimeoutError, OSError, ValueError) as exc:
            log.warning("parity probes failed", service=entry.name, error=str(exc))
            return parity.unmeasured(f"the parity probes failed: {type(exc).__name__}: {exc}"[:500])
        report = parity.compare(entry.name, staging, production, accepted)
        log.info("parity measured", service=entry.name, drift=len(report.drift), errors=len(report.errors))
        return report.as_input()
