"""The kubernetes end-to-end test's verifier: fake Pods serve no traffic, so the test itself says how each
candidate fares, in the JSON file RG_TEST_VERDICTS (`{"<version>/<environment>": "pass" | "fail"}`; a version
not named passes). It answers as `tax`, a registered team verifier, so it needs no principal of its own:
`python -m tests.kubernetes.catalog.verdict`."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from releasegate_sdk import Measurement, Result, VerificationRequest, Verifier

verifier = Verifier(
    name="tax",
    version="0.0.0-kubernetes-e2e",
    services=["shop"],
    environments=["staging", "production"],
    kpis=["verdict_fed_by_the_test"],
    looks_every=1.0,
)


@verifier.check
async def check(req: VerificationRequest) -> Result:
    verdicts = json.loads(await asyncio.to_thread(Path(os.environ["RG_TEST_VERDICTS"]).read_text))
    verdict = verdicts.get(f"{req.candidate_version}/{req.environment}", "pass")
    measured = [Measurement("verdict_fed_by_the_test", 1.0 if verdict == "pass" else 0.0, threshold=1.0)]
    if verdict == "pass":
        return Result.passed(f"the test says {req.candidate_version} is good in {req.environment}", measured)
    return Result.failed(f"the test says {req.candidate_version} is bad in {req.environment}", measured)


if __name__ == "__main__":
    verifier.run()
