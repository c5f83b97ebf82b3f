"""What a fault test checks once the release has ended: HAProxy serves what the saga says to every tenant, and
no effect happened twice (each step requested and done once, as the release's audit log records it)."""

from __future__ import annotations

from collections import Counter

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


def repeated_effects(timeline: list[dict]) -> dict[str, int]:
    """Steps whose outcome the audit log records more than once (`<step> done` / `<step> passed`), and
    non-verification steps requested more than once (a deploy or a compensation is never re-issued; a
    verification is, after an operator's resume)."""
    done: Counter[str] = Counter()
    requested: Counter[str] = Counter()
    for entry in timeline:
        step, reason = entry.get("step"), entry.get("reason", "")
        if not step:
            continue
        if reason.startswith((f"{step} done", f"{step} passed", f"compensation {step} done")):
            done[step] += 1
        if reason.startswith((f"{step} requested", f"compensation {step} requested")) and not step.startswith("verify"):
            requested[step] += 1
    return {
        f"{step} {what}": n
        for what, counts in (("done/passed", done), ("requested", requested))
        for step, n in counts.items()
        if n > 1
    }


def timed_out(timeline: list[dict]) -> list[str]:
    return [e["reason"] for e in timeline if "got no answer before its deadline" in e.get("reason", "")]
