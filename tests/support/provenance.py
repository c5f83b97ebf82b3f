"""Signed SLSA provenance for unit tests: the statement upstream CI would sign for a bundle, signed with a test key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from releasegate_platform import supply_chain

BUILDER = "https://ci.example/builders/release@v1"
REPOSITORY = "github.com/example/shop"
COMMIT = "3f1c9a7be2d04c58a1e6b7f90d2c4e8a6b1f3d57"


def signed_provenance(
    digest: str,
    key: Path,
    *,
    service: str = "shop",
    started_on: datetime = datetime(2025, 5, 5, 9, 12, tzinfo=UTC),
) -> dict[str, Any]:
    """A DSSE envelope around the provenance of `digest`, built by BUILDER from REPOSITORY's main branch."""
    statement = supply_chain.provenance_statement(
        artifact_name=f"{service}.tar.gz",
        digest=digest,
        builder_id=BUILDER,
        build_type="https://ci.example/build-types/bundle@v1",
        repository=REPOSITORY,
        ref="refs/heads/main",
        commit=COMMIT,
        dependencies=[],
        invocation_id="run-1",
        started_on=started_on,
    )
    return supply_chain.sign(statement, [key])
