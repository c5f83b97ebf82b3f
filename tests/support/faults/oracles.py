"""What a fault test checks once the release has ended: HAProxy serves what the saga says to every tenant, and
no effect happened twice (each step requested and done once, as the release's audit log records it)."""

from __future__ import annotations

from bench.faults import repeated_effects, timed_out
from releasegate_cli.probes import versions_served
from tests.e2e.conftest import PRODUCTION, STAGING

# the tenants the synthetic shoppers use: each is probed by its own Host (an unknown tenant proves nothing: HAProxy
# sends it to stable)
TENANTS = {PRODUCTION: ("acme", "globex", "initech"), STAGING: ("qa",)}


async def served_to_every_tenant(version: str) -> dict[str, dict[str, int]]:
    """Tenant → versions that answered it, for tenants not served `version` alone (empty: consistent)."""
    wrong: dict[str, dict[str, int]] = {}
    for base, tenants in TENANTS.items():
        for tenant in tenants:
            seen = await versions_served(base, 20, tenant=tenant)
            if set(seen) != {version}:
                wrong[tenant] = dict(seen)
    return wrong


__all__ = ["repeated_effects", "served_to_every_tenant", "timed_out"]
