"""Verifier settings."""

from __future__ import annotations

from releasegate_runtime.settings import ServiceSettings


class VerifierSettings(ServiceSettings):
    haproxy_log_udp: str = "127.0.0.1:15514"
    tick_seconds: float = 0.5
    data_look_gap_seconds: float = 0.05  # how soon after a look new business events may bring the next one
    prometheus_url: str | None = "http://127.0.0.1:19090"
