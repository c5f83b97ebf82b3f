"""Releases for the integration tests: the throwaway `it-shop` catalog entry, a candidate for it, and the state
of its saga as the coordinator stored it."""

from __future__ import annotations

import uuid

from contracts.events import CandidateSubmitted

TEST_CATALOG = """
apiVersion: releasegate.dev/v1
kind: Service
revision: 1
name: it-shop
tier: 3
owner: team-test
environments: [staging, production]
kpis:
  checkout_success_rate: {min: 0.5}
"""


def candidate(service: str = "it-shop") -> CandidateSubmitted:
    rid = f"it-{uuid.uuid4().hex[:10]}"
    return CandidateSubmitted.model_validate(
        {
            "release_id": rid,
            "service": service,
            "version": "v9",
            "artifact": {"digest": "sha256:" + "d" * 64, "uri": "store://none"},
            "source": {"repository": "r", "ref": "refs/heads/main", "commit": "e" * 40},
            "tests": {"passed": 1, "failed": 0},
            "author": "dev@test",
        }
    )


async def saga_state(pool, rid):
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT state FROM sagas WHERE release_id = $1", rid)
