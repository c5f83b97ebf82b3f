"""`releasegate keygen | attest | verify`: make keys, sign build provenance for a file, and check it offline
against the trust root, as the deployer will."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from uuid import uuid4

import typer
from rich.console import Console

from releasegate_platform import supply_chain
from releasegate_platform.artifacts import sha256_file

DEFAULT_TRUST_ROOT = Path("policies/trust-root.yaml")
DEFAULT_BUILD_TYPE = "https://releasegate.dev/build-types/bundle@v1"
EXIT_VERIFIED, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2
console = Console(width=160)


def register(app: typer.Typer) -> None:
    """Add the supply-chain commands to the `releasegate` app."""
    app.command()(keygen)
    app.command()(attest)
    app.command()(verify)


def keygen(
    name: str, directory: Annotated[Path, typer.Option("--dir", help="Where to write the key files.")] = Path(".")
) -> None:
    """Create an ed25519 key pair NAME.key (private, mode 0600) and NAME.pub.json (public, with keyid)."""
    try:
        private, public = supply_chain.keygen(directory, name)
    except FileExistsError:
        console.print(f"[red]{directory / (name + '.key')} exists: refusing to overwrite a private key[/red]")
        raise typer.Exit(EXIT_ERROR) from None
    console.print(f"private key: {private}\npublic key:  {public}", highlight=False)


def attest(
    artifact_file: Path,
    key: Annotated[Path, typer.Option(help="Builder's private key file.")],
    builder_id: Annotated[str, typer.Option(help="Builder id, as listed in the trust root.")],
    repository: Annotated[str, typer.Option(help="Source repository, e.g. github.com/org/repo.")],
    ref: Annotated[str, typer.Option(help="Git ref built, e.g. refs/heads/main.")],
    commit: Annotated[str, typer.Option(help="Git commit built.")],
    name: Annotated[str | None, typer.Option(help="Subject name (default: the file name).")] = None,
    build_type: Annotated[str, typer.Option(help="SLSA buildType URI.")] = DEFAULT_BUILD_TYPE,
    out: Annotated[Path | None, typer.Option(help="Write the envelope here (default: stdout).")] = None,
) -> None:
    """Sign SLSA provenance for ARTIFACT_FILE (by its sha256) and write the DSSE envelope as JSON."""
    try:
        statement = supply_chain.provenance_statement(
            artifact_name=name or artifact_file.name,
            digest=sha256_file(artifact_file),
            builder_id=builder_id,
            build_type=build_type,
            repository=repository,
            ref=ref,
            commit=commit,
            dependencies=[],
            invocation_id=str(uuid4()),
            started_on=datetime.now(UTC),
        )
        envelope = supply_chain.sign(statement, [key])
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot attest {artifact_file}:[/red] {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    text = json.dumps(envelope, indent=2) + "\n"
    if out is None:
        print(text, end="")
    else:
        out.write_text(text)
        console.print(f"attestation written to {out}", highlight=False)


def verify(
    artifact_file: Path,
    attestation_file: Path,
    service: Annotated[str, typer.Option(help="Service the artifact is deployed as.")],
    trust_root: Annotated[Path, typer.Option(help="Trust root YAML.")] = DEFAULT_TRUST_ROOT,
) -> None:
    """Check ATTESTATION_FILE for ARTIFACT_FILE against the trust root; exit 0 if it verifies, 1 if not."""
    try:
        root = supply_chain.TrustRoot.load(trust_root)
        digest = sha256_file(artifact_file)
        envelope = json.loads(attestation_file.read_text())
    except (OSError, json.JSONDecodeError, supply_chain.TrustRootError) as exc:
        console.print(f"[red]cannot verify:[/red] {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    facts = supply_chain.inspect(envelope, digest, service, root)
    console.print(f"artifact            {digest}\ntrust root          v{root.version} {root.digest}", highlight=False)
    for field, value in facts.as_input().items():
        if field != "problems":
            console.print(f"{field:<19} {value}", highlight=False)
    if facts.problems:
        for problem in facts.problems:
            console.print(f"[red]✗[/red] {problem}", highlight=False)
        raise typer.Exit(EXIT_REFUSED)
    console.print("[green]✓ verified[/green]")
