"""`releasegate incident ID` and `releasegate followup add|close`: what a rolled-back release taught, and the
follow-up actions that feed it back into verifiers, policy, runbooks and tests. Adding and closing are signed
operator commands on release.control, as abort and pause are; the coordinator checks the signature, the nonce and
the catalog's `approvers.actions.followup` groups, and records them in the audit log."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from pydantic import ValidationError
from rich.console import Console

from contracts.events import FollowupAdded, FollowupClosed, FollowupKind, FollowupSeverity, OperatorCommand
from releasegate_cli import api as remote
from releasegate_cli import client
from releasegate_platform import identity
from releasegate_runtime import db
from releasegate_runtime.settings import ServiceSettings

console = Console(width=160)
followup = typer.Typer(help="Follow-up actions of an incident: add and close them (signed).", no_args_is_help=True)
EXIT_OK, EXIT_ERROR = 0, 2
KINDS, SEVERITIES = get_args(FollowupKind), get_args(FollowupSeverity)
Key = Annotated[
    Path | None,
    typer.Option(envvar="RG_OPERATOR_KEY", help="Your private key (from `releasegate keygen`); the command is signed."),
]
Actor = Annotated[
    str | None, typer.Option(help="Your identity (default: the person whose key --key is, in the identities file).")
]


def _settings() -> ServiceSettings:
    return ServiceSettings(db_role=os.environ.get("RG_DB_ROLE") or "rg_ops")


def _remote(ctx: typer.Context, path: str, body: dict[str, Any]) -> bool:
    """With `--api` (or RELEASEGATE_API): the command goes through the API, which signs it for the person the login
    proved (no --key); True when it did."""
    url = ctx.find_root().params.get("api") or os.environ.get("RELEASEGATE_API")
    if not url:
        return False
    try:
        answer = remote.Api(url, remote.token(ctx.find_root().params.get("token_file"))).post(path, body)
    except remote.ApiError as exc:
        console.print(f"refused: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_ERROR) from None
    console.print(f"accepted (command {answer['command_id']}); `releasegate incident` shows it once recorded")
    return True


async def incident_of(settings: ServiceSettings, release_id: str) -> dict[str, Any] | None:
    """The incident of a release with its follow-ups, as the coordinator recorded them; None if it has none."""
    pool = await db.create_pool(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT release_id, service, version, outcome, summary, findings, opened_at FROM incidents"
                " WHERE release_id = $1",
                release_id,
            )
            if row is None:
                return None
            followups = await conn.fetch(
                "SELECT followup_id, kind, severity, owner, title, status, added_by, added_at, reason, closed_by,"
                " closed_at, close_reason FROM incident_followups WHERE release_id = $1 ORDER BY followup_id",
                release_id,
            )
    finally:
        await pool.close()
    out = {**dict(row), "opened_at": row["opened_at"].isoformat()}
    out["followups"] = [
        {
            **dict(f),
            "added_at": f["added_at"].isoformat(),
            "closed_at": f["closed_at"].isoformat() if f["closed_at"] else None,
        }
        for f in followups
    ]
    return out


def show(release_id: str, as_json: bool = False) -> None:
    """What the release's incident says: the failure, where and by whom it was caught, the follow-ups."""
    found = asyncio.run(incident_of(_settings(), release_id))
    if found is None:
        console.print(f"[red]release {release_id} has no incident (only rolled-back releases open one)[/red]")
        raise typer.Exit(EXIT_ERROR)
    if as_json:
        print(json.dumps(found, indent=2, default=str))
        return
    for line in render(found):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def render(incident: dict[str, Any]) -> list[str]:
    f = incident["findings"] or {}
    lines = [
        f"Incident of {incident['release_id']} ({incident['service']} {incident['version']}, "
        f"{incident['outcome'].replace('_', ' ')}), opened {incident['opened_at'][:19]}Z",
        f"  Failure: {f.get('reason') or incident['summary']}",
        f"  Where: {f.get('step') or '?'}"
        + (f" in {f['environment']}" if f.get("environment") else "")
        + (
            f" serving only {', '.join(f['segments'])}"
            if f.get("weight") == 0 and f.get("segments")
            else f" at {f['weight']}% of traffic"
            if f.get("weight") is not None
            else ""
        )
        + (f", {f['candidate_version']} against stable {f['stable_version']}" if f.get("stable_version") else ""),
    ]
    if f.get("verifier"):
        lines.append(f"  Caught by: {f['verifier']}")
    for kpi in f.get("kpis") or []:
        lines.append(
            f"  Failing KPI {kpi.get('name')}: candidate {_figure(kpi.get('candidate'))} "
            f"({kpi.get('candidate_samples')} samples) vs stable {_figure(kpi.get('baseline'))} "
            f"({kpi.get('baseline_samples')}); {kpi.get('rule')}"
        )
    if f.get("segments"):
        lines.append(f"  Segment: {', '.join(f['segments'])}")
    for m in f.get("migrations") or []:
        lines.append(f"  Migration involved: {m.get('name')} ({m.get('kind')})")
    if not incident["followups"]:
        lines.append("  No follow-ups yet: `releasegate followup add ID --kind --severity --owner --title --key`")
    for fu in incident["followups"]:
        state = (
            f"closed by {fu['closed_by']} {fu['closed_at'][:19]}Z: {fu['close_reason']}"
            if fu["status"] == "closed"
            else "OPEN"
        )
        lines.append(f"  #{fu['followup_id']} {fu['severity']} {fu['kind']} ({fu['owner']}): {fu['title']} — {state}")
    return lines


def _figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "no data"


@followup.command("add")
def add(
    ctx: typer.Context,
    release_id: str,
    kind: Annotated[str, typer.Option(help="verifier | policy | runbook | test")],
    severity: Annotated[str, typer.Option(help="low | medium | high")],
    owner: Annotated[str, typer.Option(help="A person or group of the identities file.")],
    title: Annotated[str, typer.Option(help="What is to be done, in one line (3-200 characters).")],
    key: Key = None,
    reason: Annotated[str | None, typer.Option(help="Why (default: the title).")] = None,
    actor: Actor = None,
) -> None:
    """Add a follow-up action to the incident of RELEASE_ID (signed with your key, or by the API with --api)."""
    body = {"kind": kind, "severity": severity, "owner": owner, "title": title, "reason": reason}
    if _remote(ctx, f"/v1/releases/{release_id}/followups", body):
        return
    _send(
        lambda who: FollowupAdded(
            release_id=release_id,
            actor=who,
            reason=reason or title,
            kind=kind,  # type: ignore[arg-type]  # validated by the contract, with the error shown
            severity=severity,  # type: ignore[arg-type]
            owner=owner,
            title=title,
        ),
        key,
        actor,
    )


@followup.command("close")
def close(
    ctx: typer.Context,
    release_id: str,
    number: Annotated[int, typer.Argument(help="The follow-up's number (`releasegate incident ID`).")],
    reason: Annotated[str, typer.Option(help="What was done.")],
    key: Key = None,
    actor: Actor = None,
) -> None:
    """Close follow-up NUMBER of the incident of RELEASE_ID (signed with your key, or by the API with --api)."""
    if _remote(ctx, f"/v1/releases/{release_id}/followups/{number}/close", {"reason": reason}):
        return
    _send(lambda who: FollowupClosed(release_id=release_id, actor=who, reason=reason, followup=number), key, actor)


def _send(build: Any, key: Path | None, actor: str | None) -> None:
    if key is None:
        console.print("[red]--key (or RG_OPERATOR_KEY) is required: follow-ups are signed commands[/red]")
        raise typer.Exit(EXIT_ERROR)
    settings = _settings()
    try:
        command: OperatorCommand = build(client.actor_for(settings, key, actor))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        console.print(f"invalid follow-up: {problems}", style="red", markup=False, highlight=False)
        raise typer.Exit(EXIT_ERROR) from None
    except (OSError, ValueError, identity.IdentityError) as exc:
        console.print(f"[red]cannot sign with {key}: {exc}[/red]")
        raise typer.Exit(EXIT_ERROR) from None
    event = identity.sign_command(key, command)
    asyncio.run(client.control(settings, event))
    console.print(f"{type(event).__name__} for {event.release_id} sent (`releasegate incident {event.release_id}`)")


def register(app: typer.Typer) -> None:
    app.add_typer(followup, name="followup")

    @app.command("incident")
    def incident(
        release_id: str,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Show the incident of a rolled-back release: what failed, where, who caught it, and its follow-ups."""
        show(release_id, as_json)
