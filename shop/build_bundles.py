"""Builds the shop's release bundles (v1 … v5) as deterministic tar.gz files in the artifact store.

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
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BASE = HERE / "bundle_src"
VERSIONS = HERE / "versions"
DEFAULT_STORE = REPO / ".cache" / "store"
CANDIDATES_DIR = REPO / "examples" / "candidates"

# Each version and the overlays applied to bundle_src/ to make it, oldest first.
LINEAGE: dict[str, list[str]] = {"v1": [], "v2": ["v2"], "v3": ["v2", "v3"], "v4": ["v2", "v4"], "v5": ["v2", "v5"]}

CANDIDATES: dict[str, dict[str, str]] = {
    "v1": {"commit": "3f1c9a7be2d04c58a1e6b7f90d2c4e8a6b1f3d57",
           "changes": "Baseline storefront: catalog, cart, checkout, order confirmation."},
    "v2": {"commit": "8b2e4d6f0a1c3e5b7d9f1a2c4e6b8d0f2a4c6e81",
           "changes": "Catalog shows a free-shipping badge on products from $50."},
    "v3": {"commit": "c47a19e05d3b8f26a0e4c1d7b9f35e2a8c6d0b93",
           "changes": "Normalise card numbers before authorization (payments.py)."},
    "v4": {"commit": "5d0e2f4a6c8b1d3f5e7a9c0b2d4f6a8c1e3b5d70",
           "changes": "Cache card tokenisation (payments.py): a small checkout regression, for the benchmark."},
    "v5": {"commit": "9a1c3e5b7d0f2a4c6e8b1d3f5a7c9e0b2d4f6a83",
           "changes": "Inline fraud-scoring hook before authorization: +30% p95 latency, for the benchmark."},
}

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


def candidate(version: str, digest: str) -> dict:
    """The release candidate upstream CI would publish for a built version."""
    hexdigest = digest.removeprefix("sha256:")
    return {
        "service": "shop",
        "version": version,
        "artifact": {"digest": digest, "uri": f"store://sha256/{hexdigest}"},
        "source": {"repository": "github.com/releasegate/sample-shop", "ref": "refs/heads/main",
                   "commit": CANDIDATES[version]["commit"]},
        "tests": {"passed": 128, "failed": 0, "suite": "ci"},
        "author": "dev@shop.example",
        "changes": CANDIDATES[version]["changes"],
    }


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
    parser.add_argument("--write-candidates", action="store_true",
                        help=f"also (re)write shop-<version>.json candidate files in {CANDIDATES_DIR}")
    args = parser.parse_args(argv)
    digests = build_all(args.store)
    if args.write_candidates:
        write_candidates(digests)
    print(json.dumps(digests, indent=2))


if __name__ == "__main__":
    main()
