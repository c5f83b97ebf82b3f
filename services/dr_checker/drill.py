"""Restore drill: `python -m services.dr_checker.drill SERVICE` (or `releasegate dr drill SERVICE`) restores the
newest backup of the service's database into a scratch database, times it, runs the catalog's integrity checks
there, records the result and drops the scratch database (`releasegate_platform.pgtools.jobs`)."""

from __future__ import annotations

import asyncio
import sys

from releasegate_platform.catalog import Catalog
from releasegate_platform.pgtools.jobs import run_drill
from releasegate_runtime.settings import ServiceSettings


def main() -> None:
    settings = ServiceSettings()
    service = sys.argv[1] if len(sys.argv) > 1 else "shop"
    drill = asyncio.run(run_drill(settings, Catalog(settings.catalog_dir).get(service)))
    print(f"restore drill of {service}: {'passed' if drill.passed else 'FAILED'}: {drill.reason}")
    sys.exit(0 if drill.passed else 1)


if __name__ == "__main__":
    main()
