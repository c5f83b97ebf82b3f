"""`releasegate verifiers | new-verifier`: who verifies what (the registry the coordinator keeps from the
verifiers' heartbeats), and a runnable verifier service for a product team to start from."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from releasegate_platform import verifier_registry as registry
from releasegate_runtime import bus_admin, db
from releasegate_runtime.bus import BusPolicy, BusPolicyError
from releasegate_runtime.settings import ServiceSettings
from releasegate_sdk.verifier import NAME_PATTERN

EXIT_ERROR = 2
RECENT = timedelta(hours=1)
console = Console(width=160)


def register(app: typer.Typer) -> None:
    """Add the verifier commands to the `releasegate` app."""
    app.command("verifiers")(verifiers)
    app.command("new-verifier")(new_verifier)
    app.command("register-verifier")(register_verifier)


async def _statuses(settings: ServiceSettings, everything: bool) -> tuple[datetime, list[registry.VerifierStatus]]:
    pool = await db.create_pool(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            now = datetime.now(UTC)
            return now, await registry.statuses(conn, now, None if everything else now - RECENT)
    finally:
        await pool.close()


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    return f"{seconds / 60:.0f}m ago" if seconds < 7200 else f"{seconds / 3600:.0f}h ago"


def verifiers(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    everything: Annotated[bool, typer.Option("--all", help="Also verifiers silent for over an hour.")] = False,
) -> None:
    """List the verifiers: version, instances, what they verify, last heartbeat, alive or not."""
    try:
        now, rows = asyncio.run(_statuses(ServiceSettings(db_role="rg_ops"), everything))
    except OSError as exc:
        console.print(f"[red]cannot reach the registry: {exc}[/red]")
        raise typer.Exit(EXIT_ERROR) from None
    if as_json:
        print(json.dumps([r.as_json(now) for r in rows], indent=2))
        return
    table = Table(header_style="bold", box=None, padding=(0, 2), pad_edge=False)
    for column in ("verifier", "version", "instances", "services", "environments", "KPIs", "last heartbeat", "status"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.name,
            ", ".join(r.versions),
            f"{r.alive_instances}/{r.instances}",
            ", ".join(r.services),
            ", ".join(r.environments),
            ", ".join(r.kpis) or "-",
            _age((now - r.last_heartbeat).total_seconds()),
            "[green]alive[/green]" if r.alive else "[red]not alive[/red]",
        )
    console.print(table if rows else "no verifier has sent a heartbeat" + ("" if everything else " in the last hour"))


INIT = '''"""{name}: a releasegate verifier. Run it with `python -m {module_path}`; its check is in check.py."""
'''
MAIN = '''"""Runs the {name} verifier until SIGTERM: `python -m {module_path}` (RG_* settings, as every service)."""
from .check import verifier

verifier.run()
'''
CHECK = '''"""The {name} verifier. Replace `measure` with a real measurement of the candidate over the request's window
(`req.candidate_version`, `req.environment`, `req.window_start` … `req.window_end`); the releasegate SDK does
the rest: requests, deadlines, retries, the verdict on release.results and the heartbeat."""
from __future__ import annotations

from releasegate_sdk import Measurement, Result, VerificationRequest, Verifier

MIN_SUCCESS_RATE = 0.95

verifier = Verifier(
    name="{name}",
    version="0.1.0",
    services={services},
    environments={environments},
    kpis=["{kpi}"],
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
    found = [Measurement("{kpi}", rate, threshold=MIN_SUCCESS_RATE, unit="ratio", passed=ok)]
    if ok:
        return Result.passed(f"{{req.candidate_version}} succeeded {{rate:.1%}} >= {{MIN_SUCCESS_RATE:.0%}}", found)
    return Result.failed(f"{{req.candidate_version}} succeeded {{rate:.1%}} < {{MIN_SUCCESS_RATE:.0%}}", found)
'''
TESTS_INIT = '''"""Unit tests of the {name} verifier's check."""
'''
TEST_CHECK = '''"""The {name} check on fake requests: no Kafka, no database."""
import asyncio

from releasegate_sdk import Verdict
from releasegate_sdk.testing import fake_request

from .. import check as module


def test_passes_when_the_candidate_meets_the_threshold():
    result = asyncio.run(module.check(fake_request(service="{first_service}")))
    assert result.verdict is Verdict.PASS
    assert result.kpis()[0].name == "{kpi}"


def test_fails_when_the_candidate_is_below_the_threshold(monkeypatch):
    async def poor(req):
        return 0.5

    monkeypatch.setattr(module, "measure", poor)
    result = asyncio.run(module.check(fake_request(service="{first_service}", environment="production")))
    assert result.verdict is Verdict.FAIL and "50.0%" in result.reason
'''
README = """# {name}

A releasegate verifier for {services_text} in {environments_text}. Its check (`check.py`) is one async
function; the releasegate SDK runs it as a service: it takes verification requests for those services and
environments, runs the check at the end of each request's window, retries `TransientError`s until the
verdict's deadline, publishes the verdict and a heartbeat on its own topic `release.results.verifier-{name}`,
which only its Kafka principal `verifier-{name}` may write.

```console
$ python -m pytest {test_dir} -q          # the check's unit tests
$ releasegate register-verifier {name}    # its principal, topic and ACLs (needs the broker's admin credential)
$ python -m {module_path}                 # run it (RG_KAFKA_BOOTSTRAP, RG_DATABASE_URL, RG_HEALTH_PORT...)
$ releasegate verifiers                   # it appears within a heartbeat
```

See docs/verifier-tutorial.md in releasegate.
"""


def _module_path(directory: Path, module: str) -> str:
    parts = directory.parts if not directory.is_absolute() else (directory.name,)
    return ".".join([*(p for p in parts if p not in (".", "")), module])


def new_verifier(
    name: str,
    directory: Annotated[Path, typer.Option("--dir", help="Package folder the verifier goes in.")] = Path("verifiers"),
    service: Annotated[
        list[str] | None, typer.Option(help="Catalog service it verifies (repeat; '*' for all).")
    ] = None,
    environment: Annotated[list[str] | None, typer.Option(help="Environment it verifies (repeat).")] = None,
) -> None:
    """Scaffold a runnable verifier service NAME in DIR/<name_with_underscores>/, with a unit test."""
    if not NAME_PATTERN.match(name):
        console.print(
            f"[red]verifier name {name!r}: lowercase letters, digits and single dashes, e.g. erp-export[/red]"
        )
        raise typer.Exit(EXIT_ERROR)
    module = name.replace("-", "_")
    target = directory / module
    if target.exists():
        console.print(f"[red]{target} exists: refusing to overwrite it[/red]")
        raise typer.Exit(EXIT_ERROR)
    services, environments = service or ["shop"], environment or ["staging", "production"]
    module_path = _module_path(directory, module)
    values = {
        "name": name,
        "module_path": module_path,
        "services": json.dumps(services),
        "environments": json.dumps(environments),
        "kpi": f"{module}_success_rate",
        "first_service": services[0] if services[0] != "*" else "shop",
        "test_dir": str(target / "tests"),
        "services_text": ", ".join(services),
        "environments_text": ", ".join(environments),
    }
    files = {
        target / "__init__.py": INIT,
        target / "__main__.py": MAIN,
        target / "check.py": CHECK,
        target / "README.md": README,
        target / "tests" / "__init__.py": TESTS_INIT,
        target / "tests" / "test_check.py": TEST_CHECK,
    }
    (target / "tests").mkdir(parents=True)
    if not (directory / "__init__.py").exists():  # `python -m <dir>.<name>` needs the folder to be a package
        files[directory / "__init__.py"] = '"""Verifiers, one package each."""\n'
    for path, template in files.items():
        path.write_text(template.format(**values))
    console.print(
        f"created {target}/ (check.py, __main__.py, README.md, tests/test_check.py)\n"
        f"test it: python -m pytest {target / 'tests'} -q\n"
        f"run it:  python -m {module_path}",
        highlight=False,
    )


def register_verifier(name: str) -> None:
    """Give verifier NAME its Kafka principal `verifier-NAME`: a SCRAM credential (password file in the secrets
    folder), its own result topic that only it may write, read on verification requests. Needs the broker's admin
    credential (the platform team's job); list the principal in deploy/kafka/acls.yaml to keep it."""
    settings = ServiceSettings()
    try:
        principal = BusPolicy.load(settings.bus_policy_file).with_verifier(name)
        admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)
        password_file = bus_admin.register(principal, admin, settings.secrets_dir)
    except (BusPolicyError, bus_admin.BusAdminError, OSError) as exc:
        console.print(f"cannot register {name[:80]!r}: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(EXIT_ERROR) from None
    console.print(
        f"principal {principal.name}: writes {', '.join(principal.produce)}; reads "
        f"{', '.join(principal.consume)}; password in {password_file}",
        highlight=False,
    )
