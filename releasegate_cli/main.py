"""`releasegate` CLI. `watch` exits 0 when promoted, 1 when rejected / rolled back / rollback_failed /
aborted, 2 on error, so a CI job can gate on it."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console

from contracts.events import (
    AbortRequested,
    ApprovalGiven,
    OperatorCommand,
    PauseRequested,
    PromoteRequested,
    ReleaseState,
    ResumeRequested,
)
from releasegate_cli import api as remote
from releasegate_cli import client
from releasegate_cli.dr import register as register_dr
from releasegate_cli.incidents import register as register_incidents
from releasegate_cli.parity import register as register_parity
from releasegate_cli.records import register as register_records
from releasegate_cli.render import print_entry
from releasegate_cli.supply_chain import register as register_supply_chain
from releasegate_cli.verifiers import register as register_verifiers
from releasegate_platform import identity
from releasegate_platform.explain import explain_release
from releasegate_runtime import secrets
from releasegate_runtime.settings import ServiceSettings

app = typer.Typer(help="Release automation for retail platforms.", no_args_is_help=True)
register_supply_chain(app)
register_verifiers(app)
register_dr(app)
register_parity(app)
register_records(app, lambda: _api())
register_incidents(app)
console = Console(width=160)
EXIT_PROMOTED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
# Every operator command is signed: the coordinator refuses unsigned ones.
OperatorKey = Annotated[
    Path | None,
    typer.Option(
        envvar="RG_OPERATOR_KEY",
        help="Your private key (from `releasegate keygen`); the command is signed with it. Not with --api: the API "
        "signs for the person your login proved.",
    ),
]
Actor = Annotated[
    str | None, typer.Option(help="Your identity (default: the person whose key --key is, in the identities file).")
]


class _Remote:
    """`--api URL`: everything goes through the API with an OIDC token; no database or Kafka credentials."""

    url: str | None = None
    token_file: Path | None = None


@app.callback()
def _options(
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            envvar="RELEASEGATE_API",
            help="The releasegate API (e.g. http://127.0.0.1:18800): then the CLI needs only a token (RG_API_TOKEN or "
            "`releasegate --api URL login`), no database or Kafka credentials.",
        ),
    ] = None,
    token_file: Annotated[Path | None, typer.Option(help="Token file (default ~/.config/releasegate/token).")] = None,
) -> None:
    _Remote.url, _Remote.token_file = api, token_file


def _api() -> remote.Api | None:
    if not _Remote.url:
        return None
    try:
        return remote.Api(_Remote.url, remote.token(_Remote.token_file))
    except remote.ApiError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(EXIT_ERROR) from None


def _remote_call(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except remote.ApiError as exc:
        console.print(f"refused: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_ERROR) from None


def _remote_act(api: remote.Api, release_id: str, action: str, reason: str) -> None:
    answer = _remote_call(lambda: api.act(release_id, action, reason))
    console.print(f"{action} for {release_id} accepted (command {answer['command_id']})", highlight=False)


def _print_releases(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        console.print(
            f"{r['release_id']:<28} {r['service']:<10} {r['version']:<6} [bold]{r['state']:<16}[/bold] "
            f"{r['step'] or '':<22} {r['updated_at'][:19]}",
            highlight=False,
        )


def _require_key(key: Path | None) -> Path:
    if key is None:
        console.print("[red]--key (or RG_OPERATOR_KEY) is required, or act through the API with --api[/red]")
        raise typer.Exit(EXIT_ERROR)
    return key


@app.command()
def login(
    issuer: Annotated[str, typer.Option(envvar="RG_OIDC_ISSUER", help="Your OIDC issuer.")] = "http://127.0.0.1:19400",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the sign-in URL.")] = False,
) -> None:
    """Sign in with your OIDC provider (authorization code + PKCE); the token is kept owner-only for --api."""
    path = _remote_call(lambda: remote.login(issuer, open_browser=not no_browser, token_file=_Remote.token_file))
    console.print(f"signed in; token in {path}", highlight=False)


def _settings() -> ServiceSettings:
    """The CLI reads the control database as ops (read-only role `rg_ops`) unless RG_DB_ROLE or RG_DATABASE_URL
    says otherwise; on the bus it is `ci` when it submits and `ops` when it acts (`client.DEFAULT_PRINCIPALS`)."""
    return ServiceSettings(db_role=os.environ.get("RG_DB_ROLE") or "rg_ops")


@app.command()
def submit(
    file: Path,
    release_id: Annotated[str | None, typer.Option(help="Use this release id.")] = None,
    submitted_by: Annotated[str, typer.Option(help="Identity submitting the candidate.")] = "ci",
) -> None:
    """Publish a release candidate from FILE; prints its release id (with --api: and its URL)."""
    api = _api()
    if api is not None:
        try:
            raw = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            console.print(f"[red]invalid candidate file {file}:[/red] {exc}")
            raise typer.Exit(EXIT_ERROR) from None
        answer = _remote_call(lambda: api.submit(raw))
        print(answer["release_id"])
        console.print(answer["url"], highlight=False)
        return
    try:
        candidate = client.load_candidate(file, release_id, submitted_by)
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        console.print(f"[red]invalid candidate file {file}:[/red] {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    print(asyncio.run(client.submit(_settings(), candidate)))


@app.command()
def status(
    release_id: Annotated[str | None, typer.Argument()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show one release (with its timeline) or the most recent ones."""
    api = _api()
    if api is not None:
        if release_id:
            detail = _remote_call(lambda: api.release(release_id))
            rows = [{**detail["release"], "timeline": detail["timeline"]}]
        else:
            rows = _remote_call(lambda: api.releases())
        if as_json:
            print(json.dumps(rows[0] if release_id else rows, indent=2, default=str))
            return
        _print_releases(rows)
        for row in rows[0].get("timeline", []) if release_id else []:
            print_entry(console, row)
        return
    settings = _settings()
    rows = asyncio.run(client.releases(settings, release_id))
    if release_id and not rows:
        console.print(f"[red]unknown release {release_id}[/red]")
        raise typer.Exit(EXIT_ERROR)
    if as_json:
        if release_id:
            rows[0]["timeline"] = asyncio.run(client.timeline(settings, release_id))
        print(json.dumps(rows[0] if release_id else rows, indent=2, default=str))
        return
    _print_releases(rows)
    if release_id:
        timeline(release_id)


@app.command()
def timeline(release_id: str) -> None:
    """Print every state change of a release with time, actor, reason and the evidence behind it."""
    api = _api()
    if api is not None:
        for row in _remote_call(lambda: api.release(release_id))["timeline"]:
            print_entry(console, row)
        return
    for row in asyncio.run(client.timeline(_settings(), release_id)):
        print_entry(console, row)


@app.command()
def watch(release_id: str, timeout: Annotated[float, typer.Option(help="Give up after seconds.")] = 900.0) -> None:
    """Follow a release live until it ends; the exit code tells how it ended."""
    api = _api()
    if api is not None:
        _watch_remote(api, release_id, timeout)
    settings = _settings()
    deadline = time.monotonic() + timeout
    last_id = 0
    while time.monotonic() < deadline:
        try:
            for row in asyncio.run(client.timeline(settings, release_id, last_id)):
                print_entry(console, row)
                last_id = row["id"]
            rows = asyncio.run(client.releases(settings, release_id))
        except OSError as exc:
            console.print(f"[red]cannot reach the release store: {exc}[/red]")
            raise typer.Exit(EXIT_ERROR) from None
        if rows and ReleaseState(rows[0]["state"]).terminal:
            for row in asyncio.run(client.timeline(settings, release_id, last_id)):
                print_entry(console, row)
            state = ReleaseState(rows[0]["state"])
            console.print(f"release {release_id}: [bold]{state.value}[/bold]")
            raise typer.Exit(EXIT_PROMOTED if state is ReleaseState.PROMOTED else EXIT_FAILED)
        time.sleep(0.5)
    console.print(f"[red]release {release_id} did not finish within {timeout:.0f}s[/red]")
    raise typer.Exit(EXIT_ERROR)


@app.command()
def approve(
    release_id: str,
    reason: Annotated[str, typer.Option(help="Why you approve.")],
    key: Annotated[
        Path | None,
        typer.Option(envvar="RG_APPROVER_KEY", help="Your private key (from `releasegate keygen`); not with --api."),
    ] = None,
    as_: Annotated[
        str | None,
        typer.Option(
            "--as", "--actor", help="Your identity (default: the person whose key --key is, in the identities file)."
        ),
    ] = None,
    kind: Annotated[
        str, typer.Option(help="approval | exception (to a freeze) | go | no-go (hold point)")
    ] = "approval",
) -> None:
    """Approve a release (signed with your key, so the gate knows it was you), or resume a paused one."""
    if kind not in ("approval", "exception", "go", "no-go"):
        console.print(f"[red]unknown kind {kind!r}: approval, exception, go or no-go[/red]")
        raise typer.Exit(EXIT_ERROR)
    api = _api()
    if api is not None:
        _remote_act(api, release_id, "approve" if kind == "approval" else kind, reason)
        return
    _wait_for_release(release_id)
    _send_signed(
        lambda actor: ApprovalGiven(release_id=release_id, actor=actor, reason=reason, kind=kind),
        _require_key(key),
        as_,
    )


@app.command()
def explain(release_id: str) -> None:
    """Say in plain sentences why a release passed, waits, or was blocked at each gate."""
    api = _api()
    if api is not None:
        for line in _remote_call(lambda: api.release(release_id))["explain"]:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        return
    settings = _settings()
    rows = asyncio.run(client.releases(settings, release_id))
    if not rows:
        console.print(f"[red]unknown release {release_id}[/red]")
        raise typer.Exit(EXIT_ERROR)
    decisions = asyncio.run(client.gate_decisions(settings, release_id))
    timeline = asyncio.run(client.timeline(settings, release_id))  # evidence decoded from jsonb by the pool
    for line in explain_release(rows[0], decisions, timeline):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command()
def abort(
    release_id: str, reason: Annotated[str, typer.Option(help="Why you abort.")], key: OperatorKey, actor: Actor = None
) -> None:
    """Abort a release; completed steps are compensated."""
    api = _api()
    if api is not None:
        _remote_act(api, release_id, "abort", reason)
        return
    _send_signed(lambda who: AbortRequested(release_id=release_id, actor=who, reason=reason), _require_key(key), actor)


@app.command()
def pause(
    release_id: str, reason: Annotated[str, typer.Option(help="Why you pause.")], key: OperatorKey, actor: Actor = None
) -> None:
    """Hold a running release where it is (the step in flight is repeated on resume)."""
    api = _api()
    if api is not None:
        _remote_act(api, release_id, "pause", reason)
        return
    _send_signed(lambda who: PauseRequested(release_id=release_id, actor=who, reason=reason), _require_key(key), actor)


@app.command()
def resume(
    release_id: str, reason: Annotated[str, typer.Option(help="Why you resume.")], key: OperatorKey, actor: Actor = None
) -> None:
    """Continue a paused release."""
    api = _api()
    if api is not None:
        _remote_act(api, release_id, "resume", reason)
        return
    _send_signed(lambda who: ResumeRequested(release_id=release_id, actor=who, reason=reason), _require_key(key), actor)


@app.command()
def promote(
    release_id: str,
    reason: Annotated[str, typer.Option(help="Why you promote now.")],
    key: OperatorKey,
    full: Annotated[bool, typer.Option("--full", help="Skip every remaining canary step.")] = False,
    actor: Actor = None,
) -> None:
    """With --full: send all production traffic to the candidate now, skipping the remaining canary steps."""
    if not full:
        console.print("[red]only `promote --full` is supported: say --full to skip the remaining canary[/red]")
        raise typer.Exit(EXIT_ERROR)
    api = _api()
    if api is not None:
        _remote_act(api, release_id, "promote-full", reason)
        return
    _send_signed(
        lambda who: PromoteRequested(release_id=release_id, actor=who, reason=reason), _require_key(key), actor
    )


@app.command("canary-cookie")
def canary_cookie(user: Annotated[str, typer.Argument(help="A person of the identities file.")]) -> None:
    """Print the signed canary cookie of an internal user (`rg_canary=<user>.<mac>`): HAProxy sends whoever carries
    it to the candidate while one is being released. Only people of the identities file get one, and it needs the
    stack's canary key (.run/secrets/haproxy/canary.key), so run it as the stack's operator."""
    settings = _settings()
    try:
        people = identity.Identities.load(settings.identities_file).people
        if user not in people:
            raise secrets.CanaryError(
                f"{user[:40]!r} is not a person of {settings.identities_file}: canary cookies "
                "are for internal users only"
            )
        cookie = secrets.canary_cookie(secrets.canary_key(settings.secrets_dir), user)
    except (identity.IdentityError, secrets.CanaryError) as exc:
        console.print(f"no canary cookie: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_ERROR) from None
    print(f"{secrets.CANARY_COOKIE}={cookie}")


def _send_signed(command: Callable[[str], OperatorCommand], key: Path, actor: str | None) -> None:
    """Build the command for the acting identity, sign it with `key` (with a new nonce) and send it."""
    try:
        event = identity.sign_command(key, command(client.actor_for(_settings(), key, actor)))
    except (OSError, ValueError, identity.IdentityError) as exc:
        console.print(f"[red]cannot sign with {key}: {exc}[/red]")
        raise typer.Exit(EXIT_ERROR) from None
    _control(event)


def _watch_remote(api: remote.Api, release_id: str, timeout: float) -> None:
    """Follow the release through the API: its timeline now, then each status change as it happens."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        detail = _remote_call(lambda: api.release(release_id))
        for row in detail["timeline"]:
            if row["id"] > seen:
                print_entry(console, row)
                seen = row["id"]
        state = ReleaseState(detail["release"]["state"])
        if state.terminal:
            console.print(f"release {release_id}: [bold]{state.value}[/bold]")
            raise typer.Exit(EXIT_PROMOTED if state is ReleaseState.PROMOTED else EXIT_FAILED)
        try:
            for _ in api.events(release_id):
                break  # something changed: read the release again
        except (remote.ApiError, httpx.HTTPError):
            time.sleep(1.0)  # the stream broke: read again after a pause rather than in a tight loop
    console.print(f"[red]release {release_id} did not finish within {timeout:.0f}s[/red]")
    raise typer.Exit(EXIT_ERROR)


def _wait_for_release(release_id: str, timeout: float = 30.0) -> None:
    """A release submitted a moment ago becomes known once the coordinator has read it; wait that long."""
    settings = _settings()
    deadline = time.monotonic() + timeout
    while not asyncio.run(client.releases(settings, release_id)):
        if time.monotonic() > deadline:
            console.print(f"[red]unknown release {release_id}[/red]")
            raise typer.Exit(EXIT_ERROR)
        time.sleep(0.3)


def _control(event: OperatorCommand) -> None:
    asyncio.run(client.control(_settings(), event))
    console.print(f"{type(event).__name__} for {event.release_id} sent")


if __name__ == "__main__":
    app()
