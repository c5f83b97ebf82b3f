"""`releasegate record ID | record verify FILE | records SERVICE`: take a release's signed change record away (JSON,
and its HTML page), check one with the records public key alone, list a service's records."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from contracts.names import RELEASE_ID
from releasegate_cli import api as remote
from releasegate_platform import change_record, change_record_html
from releasegate_runtime import db
from releasegate_runtime.keys import load_public_key
from releasegate_runtime.settings import ServiceSettings

EXIT_VERIFIED, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2
console = Console(width=160)
PublicKey = Annotated[
    Path | None,
    typer.Option(
        "--public-key",
        help="The records public key (.pub.json); default <secrets>/keys/records.pub.json of this machine.",
    ),
]


def _settings() -> ServiceSettings:
    return ServiceSettings(db_role=os.environ.get("RG_DB_ROLE") or "rg_ops")  # the CLI's read-only role


def _say(text: str, style: str | None = None) -> None:
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def _public_key(path: Path | None) -> Any:
    path = path or _settings().secrets_dir / "keys" / f"{change_record.KEY_NAME}.pub.json"
    try:
        return load_public_key(path)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        _say(f"cannot read the records public key {path}: {exc}", "red")
        raise typer.Exit(EXIT_ERROR) from None


def verify(file: Path, public_key: PublicKey = None) -> None:
    """Check a change record (the DSSE envelope) against the records public key: exit 0 if it verifies, 1 if it is
    refused (altered, signed by another key, not a change record), 2 if it cannot be read."""
    key = _public_key(public_key)
    try:
        envelope = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        _say(f"cannot read {file}: {exc}", "red")
        raise typer.Exit(EXIT_ERROR) from None
    except json.JSONDecodeError as exc:
        _say(f"refused: {file} is not JSON ({exc})", "red")
        raise typer.Exit(EXIT_REFUSED) from None
    try:
        record = change_record.open_envelope(envelope, key)
    except change_record.RecordError as exc:
        _say(f"refused: {exc}", "red")
        raise typer.Exit(EXIT_REFUSED) from None
    r = record["release"]
    _say(
        f"verified: change record of {r['release_id']} ({r['service']} {r['version']}, {r['outcome']}), signed by "
        f"records key {key.keyid}, payload {change_record.payload_digest(envelope)}"
    )


async def _read(sql: str, *args: Any) -> list[Any]:
    """The rows of one query on the control database, as the CLI's read-only role."""
    pool = await db.create_pool(_settings().database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            return list(await conn.fetch(sql, *args))
    finally:
        await pool.close()


async def _stored(release_id: str) -> dict[str, Any] | None:
    rows = await _read("SELECT envelope FROM change_records WHERE release_id = $1", release_id)
    return dict(rows[0]["envelope"]) if rows else None


async def _listing(service: str, limit: int) -> list[dict[str, Any]]:
    rows = await _read(
        "SELECT release_id, version, outcome, payload_sha256, recorded_at FROM change_records"
        " WHERE service = $1 ORDER BY recorded_at DESC LIMIT $2",
        service,
        limit,
    )
    return [{**dict(r), "recorded_at": r["recorded_at"].isoformat()} for r in rows]


def register(app: typer.Typer, api: Callable[[], remote.Api | None]) -> None:
    """Add the change-record commands; `api` gives the API client when --api was given."""

    def call(what: Callable[[], Any]) -> Any:
        try:
            return what()
        except remote.ApiError as exc:
            if exc.status == 404:
                return None
            _say(f"refused: {exc}", "red")
            raise typer.Exit(EXIT_ERROR) from None

    @app.command()
    def record(
        release_id: Annotated[str, typer.Argument(help="The release (or `verify`, then the record file).")],
        file: Annotated[Path | None, typer.Argument(help="With `verify`: the record file to check.")] = None,
        out: Annotated[Path | None, typer.Option(help="Write the record here (default change-record-ID.json).")] = None,
        html: Annotated[Path | None, typer.Option(help="Also write its readable HTML page here.")] = None,
        public_key: PublicKey = None,
    ) -> None:
        """Write the signed change record of an ended release (a DSSE envelope: candidate, provenance, gates,
        approvals, DR evidence, verdicts with their KPI tables, traffic, compensations, incident, release notes),
        checked against the records public key first. `releasegate record verify FILE` checks a record file."""
        if release_id == "verify":
            if file is None:
                _say("record verify needs the record FILE", "red")
                raise typer.Exit(EXIT_ERROR)
            verify(file, public_key)
            return
        if not re.fullmatch(RELEASE_ID, release_id):
            _say(f"{release_id[:80]!r} is not a release id (e.g. shop-v2-1a2b3c4d)", "red")
            raise typer.Exit(EXIT_ERROR)
        client = api()
        if client is not None:
            envelope = call(lambda: client.get(f"/v1/releases/{release_id}/record"))
        else:
            envelope = asyncio.run(_stored(release_id))
        if envelope is None:
            _say(
                f"no change record of {release_id}: the API writes it when the release ends (has it ended, and is the "
                "API running?)",
                "red",
            )
            raise typer.Exit(EXIT_ERROR)
        key = _public_key(public_key)
        try:
            opened = change_record.open_envelope(envelope, key)
        except change_record.RecordError as exc:
            _say(f"refused: the stored record of {release_id} does not verify: {exc}", "red")
            raise typer.Exit(EXIT_REFUSED) from None
        target = out or Path(f"change-record-{release_id}.json")
        target.write_text(json.dumps(envelope, indent=2) + "\n")
        digest = change_record.payload_digest(envelope)
        _say(f"change record of {release_id} ({opened['release']['outcome']}) verified and written to {target}")
        if html is not None:
            html.write_text(
                change_record_html.render(opened, {"verified": True, "keyid": key.keyid, "payload_sha256": digest})
            )
            _say(f"readable page written to {html}")

    @app.command()
    def records(
        service: str, limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 20
    ) -> None:
        """List a service's change records, newest first."""
        client = api()
        rows = (
            call(lambda: client.get(f"/v1/services/{service}/records?limit={limit}"))
            if client is not None
            else asyncio.run(_listing(service, limit))
        ) or []
        for r in rows:
            _say(
                f"{r['release_id']:<28} {r['version']:<8} {r['outcome']:<16} {r['recorded_at'][:19]}  {r['payload_sha256']}"
            )
        if not rows:
            _say(f"no change records of {service}")
