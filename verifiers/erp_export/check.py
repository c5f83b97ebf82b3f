"""The erp-export verifier. Replace `measure` with a real measurement of the candidate over the request's window
(`req.candidate_version`, `req.environment`, `req.window_start` … `req.window_end`); the releasegate SDK does
the rest: requests, deadlines, retries, the verdict on release.results and the heartbeat."""
from __future__ import annotations

from releasegate_sdk import Measurement, Result, VerificationRequest, Verifier

MIN_SUCCESS_RATE = 0.95

verifier = Verifier(
    name="erp-export",
    version="0.1.0",
    services=["shop"],
    environments=["production"],
    kpis=["erp_export_success_rate"],
)


async def measure(req: VerificationRequest) -> float:
    """The candidate's success rate over the window; this example always measures 1.0. Raise
    `releasegate_sdk.TransientError` when the data source is unavailable: the check is retried until the
    verdict's deadline."""
    return 1.0


@verifier.check
async def check(req: VerificationRequest) -> Result:
    rate = await measure(req)
    ok = rate >= MIN_SUCCESS_RATE
    found = [Measurement("erp_export_success_rate", rate, threshold=MIN_SUCCESS_RATE, unit="ratio", passed=ok)]
    if ok:
        return Result.passed(f"{req.candidate_version} succeeded {rate:.1%} >= {MIN_SUCCESS_RATE:.0%}", found)
    return Result.failed(f"{req.candidate_version} succeeded {rate:.1%} < {MIN_SUCCESS_RATE:.0%}", found)
