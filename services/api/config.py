"""Settings of the API service (prefix RG_): where it listens, whose logins it trusts, the key it signs with."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from releasegate_runtime.settings import ServiceSettings


class ApiSettings(ServiceSettings):
    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=18800, ge=1, le=65535, description="Port of the API and the dashboard.")
    api_url: str = Field(
        default="http://127.0.0.1:18800",
        description="The API's public base URL: release links in answers, notifications and the dashboard.",
    )
    oidc_issuer: str = Field(default="http://127.0.0.1:19400", description="OIDC issuer of people's logins.")
    oidc_audience: str = Field(default="releasegate", description="Audience every access token must name.")
    oidc_dashboard_client: str = Field(default="releasegate-dashboard", description="Public client of the dashboard.")
    ci_issuers: list[str] = Field(
        default_factory=list,
        description="Further issuers of CI tokens (e.g. https://token.actions.githubusercontent.com); the trust "
        "root's `ci_tokens` say which repository and ref each may submit for.",
    )
    api_signing_key_file: Path | None = Field(
        default=None, description="The API's ed25519 key (attests operator commands); default <secrets>/keys/api.key."
    )
    records_key_file: Path | None = Field(
        default=None,
        description="The ed25519 key change records are signed with; default <secrets>/keys/records.key.",
    )
    records_sweep_seconds: float = Field(
        default=30.0, ge=1, le=3600, description="How often ended releases without a change record are looked for."
    )
    sse_queue: int = Field(default=256, ge=16, le=10_000, description="Status events buffered per live client.")
    sse_clients: int = Field(default=200, ge=1, le=10_000, description="Live clients at once.")

    @property
    def signing_key(self) -> Path:
        return self.api_signing_key_file or self.secrets_dir / "keys" / "api.key"

    @property
    def records_key(self) -> Path:
        return self.records_key_file or self.secrets_dir / "keys" / "records.key"

    def release_url(self, release_id: str) -> str:
        return f"{self.api_url.rstrip('/')}/releases/{release_id}"
