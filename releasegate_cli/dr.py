"""`releasegate dr`: disaster-recovery evidence on demand (backups and restore drills)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_platform.pgtools.dumps import BackupError
from releasegate_platform.pgtools.jobs import run_drill, take_backup
from releasegate_runtime.settings import ServiceSettings

dr = typer.Typer(help="Disaster-recovery evidence: backups and restore drills.", no_args_is_help=True)
console = Console(width=160)


@dr.command()
def backup(service: Annotated[str, typer.Argument()] = "shop") -> None:
    """Take a pg_dump of SERVICE's database (from the catalog) now and record it in the backup catalog."""
    try:
        path = asyncio.run(take_backup(ServiceSettings(), service))
    except BackupError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"backup of {service}: {path}")


@dr.command()
def drill(service: str) -> None:
    """Restore SERVICE's newest backup into a scratch database, time it, run its integrity checks, record it."""
    settings = ServiceSettings()
    try:
        entry = Catalog(settings.catalog_dir).get(service)
    except CatalogError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    result = asyncio.run(run_drill(settings, entry))
    for check in result.checks:
        mark = "[green]ok[/green]" if check["passed"] else "[red]VIOLATED[/red]"
        console.print(f"  {mark} {check['name']}: {check.get('violations')} violations {check.get('error', '')}")
    console.print(
        f"restore drill of {service}: {'[green]passed[/green]' if result.passed else '[red]FAILED[/red]'} "
        f"— {result.reason} (RTO {entry.dr.rto_seconds:g}s)"
    )
    raise typer.Exit(0 if result.passed else 1)


def register(app: typer.Typer) -> None:
    app.add_typer(dr, name="dr")
