"""Verifier settings."""

from __future__ import annotations

from releasegate_runtime.settings import ServiceSettings


class VerifierSettings(ServiceSettings):
    haproxy_log_udp: str = "127.0.0.1:15514"
    tick_seconds: float = 0.5
    prometheus_url: str | None = "http://127.0.0.1:19090"
