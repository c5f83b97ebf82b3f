"""Builds the shop's release bundles (v1 … v11) as deterministic tar.gz files in the artifact store.

Each version is `bundle_src/` with the overlays of `versions/<v>/` laid on top in lineage order, so a
version's bundle holds only what differs from its parent plus everything it inherits.

`python -m shop.build_bundles [--store DIR] [--write-candidates]`
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

from releasegate_platform import supply_chain

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BASE = HERE / "bundle_src"
VERSIONS = HERE / "versions"
DEFAULT_STORE = REPO / ".cache" / "store"
CANDIDATES_DIR = REPO / "examples" / "candidates"
# The demo CI builder: its key is a published demo key (examples/keys/README.md), trusted by policies/trust-root.yaml.
BUILDER_KEY = REPO / "examples" / "keys" / "ci-builder.key"
BUILDER_ID = "https://ci.shop.example/builders/release@v1"
BUILD_TYPE = "https://ci.shop.example/build-types/bundle@v1"
SOURCE_REPOSITORY, SOURCE_REF = "github.com/releasegate/sample-shop", "refs/heads/main"

# Each version and the overlays applied to bundle_src/ to make it, oldest first.
LINEAGE: dict[str, list[str]] = {
    "v1": [],
    "v2": ["v2"],
    "v3": ["v2", "v3"],
    "v4": ["v2", "v4"],
    "v5": ["v2", "v5"],
    "v6": ["v2", "v6"],
    "v7": ["v2", "v6", "v7"],
    "v8": ["v2", "v8"],
    "v9": ["v2", "v9"],
    "v10": ["v2", "v3", "v10"],
    "v11": ["v2", "v11"],
    "v12": ["v2", "v12"],
}

# Per version: source commit, change summary, and the CI run that built it (fixed, so the signed provenance,
# and with it every candidate file, is the same on each run).
CANDIDATES: dict[str, dict[str, str]] = {
    "v1": {
        "commit": "3f1c9a7be2d04c58a1e6b7f90d2c4e8a6b1f3d57",
        "changes": "Baseline storefront: catalog, cart, checkout, order confirmation.",
        "invocation_id": "https://ci.shop.example/runs/1041",
        "started_on": "2025-05-05T09:12:00Z",
    },
    "v2": {
        "commit": "8b2e4d6f0a1c3e5b7d9f1a2c4e6b8d0f2a4c6e81",
        "changes": "Catalog shows a free-shipping badge on products from $50.",
        "invocation_id": "https://ci.shop.example/runs/1057",
        "started_on": "2025-05-07T14:03:00Z",
    },
    "v3": {
        "commit": "c47a19e05d3b8f26a0e4c1d7b9f35e2a8c6d0b93",
        "changes": "Normalise card numbers before authorization (payments.py).",
        "invocation_id": "https://ci.shop.example/runs/1062",
        "started_on": "2025-05-08T10:41:00Z",
    },
    "v4": {
        "commit": "5d0e2f4a6c8b1d3f5e7a9c0b2d4f6a8c1e3b5d70",
        "changes": "Cache card tokenisation (payments.py): a small checkout regression, for the benchmark.",
        "invocation_id": "https://ci.shop.example/runs/1070",
        "started_on": "2025-05-09T16:25:00Z",
    },
    "v5": {
        "commit": "9a1c3e5b7d0f2a4c6e8b1d3f5a7c9e0b2d4f6a83",
        "changes": "Inline fraud-scoring hook before authorization: +30% p95 latency, for the benchmark.",
        "invocation_id": "https://ci.shop.example/runs/1078",
        "started_on": "2025-05-12T11:08:00Z",
    },
    "v6": {
        "commit": "2e4a6c8e0b1d3f5a7c9e1b3d5f7a9c0e2b4d6f81",
        "changes": "Orders get a nullable gift_note column (expand migration 0001).",
        "invocation_id": "https://ci.shop.example/runs/1083",
        "started_on": "2025-05-13T09:30:00Z",
    },
    "v7": {
        "commit": "7c9e1a3b5d7f9a0c2e4b6d8f0a1c3e5b7d9f1a24",
        "changes": "Drop carts.status (contract migration 0002).",
        "invocation_id": "https://ci.shop.example/runs/1090",
        "started_on": "2025-05-14T15:12:00Z",
    },
    "v8": {
        "commit": "e1b3d5f7a9c0e2b4d6f8a1c3e5b7d9f0a2c4e6b8",
        "changes": "Itemised tax per basket line on receipts (tax.py).",
        "invocation_id": "https://ci.shop.example/runs/1096",
        "started_on": "2025-05-15T10:47:00Z",
    },
    "v9": {
        "commit": "4f6a8c0e2b4d6f8a0c2e4b6d8f1a3c5e7b9d0f2a",
        "changes": "ERP order export uses the field names of the ERP's order API v2 (erp.py).",
        "invocation_id": "https://ci.shop.example/runs/1104",
        "started_on": "2025-05-16T13:58:00Z",
    },
    "v10": {
        "commit": "4b6d8f0a2c4e6b8d0f1a3c5e7b9d1f3a5c7e9b02",
        "changes": "Backfill orders.amount_minor_units (migration 0003 rewrites every order) with the card "
        "normalisation of v3: a data-rewriting release that fails its canary.",
        "invocation_id": "https://ci.shop.example/runs/1102",
        "started_on": "2025-05-16T08:45:00Z",
    },
    "v11": {
        "commit": "6d8f0a2c4e6b8d0f1a3c5e7b9d1f3a5c7e9b0d24",
        "changes": "Seasonal sale: every price 15% off (catalog.py); bundle.json declares only `content` for the "
        "edge cache, so the old prices stay cached: the release that forgets to invalidate.",
        "invocation_id": "https://ci.shop.example/runs/1111",
        "started_on": "2025-05-19T09:20:00Z",
    },
    "v12": {
        "commit": "a3c5e7b9d1f3a5c7e9b0d2f4a6c8e0b2d4f6a8c1",
        "changes": "Product listings ranked by the recommendation model, one shared session per process (catalog.py): "
        "each listing is a little slower, and listings queue, so an instance serves about half the journeys it did "
        "at twice the peak profile: blocked by the load gate.",
        "invocation_id": "https://ci.shop.example/runs/1115",
        "started_on": "2025-05-20T11:05:00Z",
    },
}
AUTHOR = "dev"  # identity name in policies/identities.yaml: never allowed to approve their own change

SKIPPED_DIRS = {"__pycache__"}
SKIPPED_SUFFIXES = (".pyc", ".pyo")


def bundle_files(version: str) -> dict[str, bytes]:
    """Relative path → content of every file of a version's bundle."""
    files: dict[str, bytes] = {}
    for root in [BASE, *(VERSIONS / v for v in LINEAGE[version])]:
        files.update(_read_tree(root))
    declared = json.loads(files["bundle.json"])["version"]
    if declared != version:
        raise ValueError(f"bundle.json of {version} declares version {declared!r}")
    return files


def _read_tree(root: Path) -> dict[str, bytes]:
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        for name in filenames:
            if not name.endswith(SKIPPED_SUFFIXES):
                path = Path(dirpath) / name
                files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def tarball(files: dict[str, bytes]) -> bytes:
    """A tar.gz whose bytes depend only on the file paths and contents."""
    dirs = sorted({parent.as_posix() for path in files for parent in Path(path).parents if parent != Path(".")})
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted([*(d + "/" for d in dirs), *files]):
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, len(files[name])
                tar.addfile(info, io.BytesIO(files[name]))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=packed, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def store_blob(store: Path, blob: bytes) -> str:
    """Put a blob into the content-addressed store; return its `sha256:<hex>` digest."""
    hexdigest = hashlib.sha256(blob).hexdigest()
    target = store / "sha256" / f"{hexdigest}.tar.gz"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(blob)
        tmp.replace(target)
    return f"sha256:{hexdigest}"


def build_all(store: Path = DEFAULT_STORE) -> dict[str, str]:
    """Build every version into the store; return {version: "sha256:<hex>"}."""
    return {version: store_blob(store, tarball(bundle_files(version))) for version in LINEAGE}


def candidate(version: str, digest: str) -> dict[str, Any]:
    """The release candidate upstream CI would publish for a built version, with its signed provenance and its
    (clean) vulnerability summary."""
    hexdigest = digest.removeprefix("sha256:")
    return {
        "service": "shop",
        "version": version,
        "artifact": {"digest": digest, "uri": f"store://sha256/{hexdigest}"},
        "source": {"repository": SOURCE_REPOSITORY, "ref": SOURCE_REF, "commit": CANDIDATES[version]["commit"]},
        "tests": {"passed": 128, "failed": 0, "suite": "ci"},
        "author": AUTHOR,
        "changes": CANDIDATES[version]["changes"],
        "attestation": attestation(version, digest),
        "vulnerabilities": {
            "format": "cyclonedx-1.5",
            "tool": "releasegate-demo-scan",
            "components": len(bundle_files(version)),
            "critical": 0,
            "high": 0,
            "medium": 0,
            "low": 0,
            "findings": [],
        },
    }


def attestation(version: str, digest: str) -> dict[str, Any]:
    """The DSSE envelope the demo CI builder signs for a version's bundle; the same bytes on every run."""
    statement = supply_chain.provenance_statement(
        artifact_name=f"shop-{version}.tar.gz",
        digest=digest,
        builder_id=BUILDER_ID,
        build_type=BUILD_TYPE,
        repository=SOURCE_REPOSITORY,
        ref=SOURCE_REF,
        commit=CANDIDATES[version]["commit"],
        dependencies=[],
        invocation_id=CANDIDATES[version]["invocation_id"],
        started_on=datetime.fromisoformat(CANDIDATES[version]["started_on"]),
    )
    return supply_chain.sign(statement, [BUILDER_KEY])


def write_candidates(digests: dict[str, str], directory: Path = CANDIDATES_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for version, digest in digests.items():
        path = directory / f"shop-{version}.json"
        path.write_text(json.dumps(candidate(version, digest), indent=2) + "\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shop.build_bundles", description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"artifact store (default {DEFAULT_STORE})")
    parser.add_argument(
        "--write-candidates",
        action="store_true",
        help=f"also (re)write the signed shop-<version>.json candidate files in {CANDIDATES_DIR}",
    )
    args = parser.parse_args(argv)
    digests = build_all(args.store)
    if args.write_candidates:
        write_candidates(digests)
    print(json.dumps(digests, indent=2))


if __name__ == "__main__":
    main()
