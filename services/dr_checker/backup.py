"""Backup job: `python -m services.dr_checker.backup SERVICE` takes a real pg_dump of the service's database (as
the catalog names it) and records it in the backup catalog (`releasegate_platform.pgtools.jobs`)."""

from __future__ import annotations

import asyncio
import sys

from releasegate_platform.pgtools.jobs import take_backup
from releasegate_runtime.settings import ServiceSettings


def main() -> None:
    service = sys.argv[1] if len(sys.argv) > 1 else "shop"
    path = asyncio.run(take_backup(ServiceSettings(), service))
    print(f"backup of {service}: {path}")


if __name__ == "__main__":
    main()
