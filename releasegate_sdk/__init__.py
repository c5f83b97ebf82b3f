"""releasegate SDK: write a verifier as one async check function; the SDK runs it as a releasegate service.

    from releasegate_sdk import Verifier, VerificationRequest, Result, Measurement, TransientError

    verifier = Verifier(name="erp-export", version="1.0.0", services=["shop"],
                        environments=["staging", "production"], kpis=["erp_export_within_sla"])

    @verifier.check
    async def check(req: VerificationRequest) -> Result:
        lag = await export_lag_seconds(req.candidate_version, req.window_start, req.window_end)
        m = Measurement("erp_export_within_sla", lag, threshold=60, unit="s", passed=lag <= 60)
        return Result.passed("exports on time", [m]) if lag <= 60 else Result.failed("exports late", [m])

    if __name__ == "__main__":
        verifier.run()

The SDK consumes `release.commands.verifier` in the group `releasegate-verifier-<name>`, keeps the requests
for its services and environments, runs the check at the window's end (and at each look with
`looks_every`), retries `TransientError` and timeouts until the deadline, publishes one verdict per request
as `VerificationFinished` through the outbox, and sends a heartbeat every `heartbeat_seconds`.
`releasegate_sdk.statistics` has the figures verifiers judge with (percentiles, the Wilson interval, sequential
canary-vs-baseline tests valid at every look), the same ones the core verifier uses. See docs/verifier-tutorial.md.
"""

from contracts.events import KpiResult, KpiThreshold, Verdict
from releasegate_sdk.types import Measurement, Result, TransientError, VerificationRequest
from releasegate_sdk.verifier import Runtime, Verifier

__all__ = [
    "Verifier",
    "VerificationRequest",
    "Result",
    "Measurement",
    "TransientError",
    "Verdict",
    "KpiResult",
    "KpiThreshold",
    "Runtime",
]
