"""Notifier settings (RG_ prefix, as every service): where secrets and the dashboard are, how deliveries are
attempted. Route secrets live in files under `notifier_secrets_dir`, never in the catalog or the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from releasegate_runtime.settings import ServiceSettings
from services.notifier.domain import RetryPolicy


class NotifierSettings(ServiceSettings):
    api_url: str = Field(
        default="http://127.0.0.1:18800",
        pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
        description="The dashboard's base URL; a notification links to `<api_url>/releases/<release id>`",
    )
    notifier_secrets_dir: Path | None = Field(
        default=None, description="Where route secrets (catalog `secret:` references) are read; default secrets_dir"
    )
    notifier_ca_file: Path | None = Field(
        default=None, description="CA bundle trusted for HTTPS webhooks and SMTP TLS besides the system's"
    )
    notifier_max_attempts: int = Field(default=5, ge=1, le=20)
    notifier_retry_initial_seconds: float = Field(default=2.0, gt=0)
    notifier_retry_cap_seconds: float = Field(default=60.0, gt=0)
    notifier_timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="one attempt, connect to answer")
    notifier_concurrency: int = Field(default=8, ge=1, le=64, description="deliveries in flight at once")
    notifier_poll_seconds: float = Field(default=1.0, gt=0, description="how often due retries are looked for")

    @model_validator(mode="after")
    def _retry_bounds(self) -> NotifierSettings:
        self.retry_policy()
        return self

    def secrets_root(self) -> Path:
        return self.notifier_secrets_dir or self.secrets_dir

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.notifier_max_attempts,
            initial=self.notifier_retry_initial_seconds,
            cap=max(self.notifier_retry_cap_seconds, self.notifier_retry_initial_seconds),
        )

    def lease_seconds(self) -> float:
        """How long a claimed delivery stays ours: one attempt's timeout with a margin."""
        return self.notifier_timeout_seconds * 2 + 5
