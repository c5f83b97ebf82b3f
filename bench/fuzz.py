"""Benchmark on the local stack (`make bench-fuzz`): 10,000 hostile records over every topic a service consumes,
through the real broker with the credentials of principals allowed to write them, then a valid release behind
them. Starts every service as its own OS process (as the end-to-end tests do), prints what happened to the
records and to the services; exits 1 unless every record was refused (dead-lettered with a reason or parked),
nothing crashed, every service is healthy and the release was promoted.

    python -m bench.fuzz [--records 10000] [--seed 20261128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter

from releasegate_runtime import db
from releasegate_runtime.bus import BusPolicy
from releasegate_runtime.settings import ServiceSettings
from tests.support.fuzz.campaign import run
from tests.support.fuzz.hostile import generate
from tests.support.fuzz.stack import watched_stack
from tests.support.fuzz.targets import targets

os.environ.setdefault("RG_ENV", "local")  # the demo keys the stack's operators sign with are trusted only here


async def main(records: int, seed: int) -> int:
    settings = ServiceSettings()
    among = targets(BusPolicy.load(settings.bus_policy_file))
    began = time.monotonic()
    hostile = generate(records, among, seed)
    print(
        f"generated {len(hostile)} hostile records for {len(among)} topics in {time.monotonic() - began:.0f}s "
        f"(seed {seed}, {sum(r.size for r in hostile) / 1e6:.0f} MB)"
    )
    for primary, n in sorted(Counter(r.primary for r in hostile).items()):
        print(f"  {primary:<18} {n}")
    pool = await db.create_pool(settings.database_url, max_size=2)
    try:
        async with watched_stack(settings) as stack:
            figures = await run(
                settings, pool, stack, among, hostile, stall_seconds=180, limit_seconds=1800, release_timeout=600
            )
    finally:
        await pool.close()
    print("\n".join(figures.lines()))
    ok = (
        not figures.unaccounted
        and not figures.refused_by_broker
        and not figures.crashes
        and not figures.unhealthy
        and figures.valid_ok
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.records, args.seed)))
