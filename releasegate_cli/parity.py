"""`releasegate parity [SERVICE]`: staging vs production as the production gate sees it — the probed facts, the
documented differences (deploy/parity.yaml) and the drift. Exit 0 without drift, 1 with drift or a probe that
failed, 2 on a usage error."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated

import typer
from rich.console import Console

from releasegate_platform import bundle_reader, parity, parity_probes, regional
from releasegate_platform.artifacts import ArtifactError, ArtifactStore
from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_runtime.settings import ServiceSettings

console = Console(width=160)


def _settings() -> ServiceSettings:
    """As ops: its Kafka principal (DescribeConfigs on the service's topic) and the read-only role `rg_ops`."""
    return ServiceSettings(
        principal=os.environ.get("RG_PRINCIPAL") or "ops", db_role=os.environ.get("RG_DB_ROLE") or "rg_ops"
    )


def _regional(settings: ServiceSettings, digest: str | None) -> regional.RegionalSet | None:
    if digest is None:
        return None
    try:
        files = bundle_reader.read(ArtifactStore(settings.artifact_store).verify(digest)).files
    except (ArtifactError, bundle_reader.BundleError) as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    return regional.load(files)


def parity_command(
    service: Annotated[str, typer.Argument(help="A service of the catalog.")] = "shop",
    digest: Annotated[
        str | None,
        typer.Option(help="Compare the integration contracts of this bundle's regional configuration (sha256:…)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report and every fact as JSON.")] = False,
) -> None:
    """Compare staging with production: deployment, database, Kafka topics, security controls, integration
    contracts, edge cache; drift deploy/parity.yaml does not document exits 1."""
    settings = _settings()
    try:
        entry = Catalog(settings.catalog_dir).get(service)
        accepted = parity.load_accepted(settings.parity_file)
    except (CatalogError, parity.ParityFileError) as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    chosen = _regional(settings, digest)
    staging, production = asyncio.run(parity_probes.measure(settings, entry, chosen))
    report = parity.compare(service, staging, production, accepted)
    if as_json:
        print(
            json.dumps(
                {
                    **report.as_input(),
                    "service": service,
                    "blocking": report.blocking,
                    "facts": {"staging": staging.values, "production": production.values},
                },
                indent=2,
                sort_keys=True,
            )
        )
    else:
        for line in report.lines():
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        if chosen is None:
            console.print(
                "  integration contracts not compared: give --digest of a bundle to read its regional configuration",
                highlight=False,
                markup=False,
            )
    raise typer.Exit(1 if report.blocking else 0)


def register(app: typer.Typer) -> None:
    app.command(name="parity")(parity_command)
