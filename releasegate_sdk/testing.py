"""Fakes for unit tests of a check: a `VerificationRequest` without Kafka or a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.events import VerificationRequested
from releasegate_sdk.schedule import Window
from releasegate_sdk.types import VerificationRequest

DEFAULTS: dict[str, Any] = {
    "release_id": "shop-v2-test",
    "step_id": "verify-staging",
    "service": "shop",
    "environment": "staging",
    "candidate_version": "v2",
    "stable_version": "v1",
    "window_seconds": 10.0,
    "min_samples": 1,
    "thresholds": {},
}


def fake_request(*, is_final_look: bool = True, grace_seconds: float = 20.0, **fields: Any) -> VerificationRequest:
    """A request whose window has just ended (or is under way, with `is_final_look=False`); any field of
    `VerificationRequested` can be given, e.g. `fake_request(environment="production", tenants=["acme"])`."""
    raw = VerificationRequested.model_validate({**DEFAULTS, **fields})
    start = datetime.now(UTC) - timedelta(seconds=raw.window_seconds if is_final_look else raw.window_seconds / 2)
    w = Window.of(start, raw.window_seconds, grace_seconds)
    return VerificationRequest.of(raw, w.start, w.end, w.deadline, is_final_look)
