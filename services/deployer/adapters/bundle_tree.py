"""An unpacked bundle on disk: written from the shared bundle reader (the gatekeeper's view of the same archive),
sealed read-only, and re-hashed against its (digest-verified) archive before it is used, so a file changed,
added or made writable after unpacking is caught and named."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

from releasegate_platform import bundle_reader
from services.deployer.domain import DeployError


def read(archive: Path) -> bundle_reader.Bundle:
    """The bundle as the gatekeeper judged it; DeployError naming what the reader refused."""
    try:
        return bundle_reader.read(archive)
    except bundle_reader.BundleError as exc:
        raise DeployError(f"refusing bundle {archive.name}: {exc}") from None


def tree_of(archive: Path) -> tuple[dict[str, str], set[str]]:
    """(sha256 per regular file, directories) of a bundle archive, by normalized relative path."""
    bundle = read(archive)
    return {name: hashlib.sha256(content).hexdigest() for name, content in bundle.files.items()}, set(bundle.dirs)


def extract(archive: Path, folder: Path) -> None:
    """Write the bundle's directories and files into the empty `folder` (links, devices and names outside the
    folder cannot occur: the reader refused them)."""
    bundle = read(archive)
    for name in sorted(bundle.dirs):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for name, content in bundle.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("xb") as out:
            out.write(content)


def tree_problem(folder: Path, files: Mapping[str, str], dirs: set[str]) -> str | None:
    """What differs between an unpacked bundle and its archive (content, extra or missing entries, write bits);
    None when it is exactly the archive, read-only."""
    seen = set()
    for path in _walk(folder):
        name = path.relative_to(folder).as_posix()
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode) and name in dirs:
            kind = "directory"
        elif stat.S_ISREG(mode) and name in files:
            kind = "file"
            if hashlib.sha256(path.read_bytes()).hexdigest() != files[name]:
                return f"file {name} differs from the signed bundle"
            seen.add(name)
        else:
            return f"{name} is not part of the signed bundle"
        if mode & 0o222:
            return f"{kind} {name} is writable; the bundle must be read-only"
    missing = sorted(set(files) - seen)
    return f"file {missing[0]} of the signed bundle is missing" if missing else None


def seal(folder: Path) -> None:
    """Read-only for everyone (files 0444, directories 0555), owned by root when we are root."""
    for path in [*_walk(folder), folder]:
        if os.geteuid() == 0:
            os.lchown(path, 0, 0)
        if not path.is_symlink():
            path.chmod(0o555 if path.is_dir() else 0o444)


def remove_tree(folder: Path) -> None:
    """rmtree that also removes a sealed (read-only) tree."""
    if not folder.exists():
        return
    for path in [folder, *_walk(folder)]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o700)
    shutil.rmtree(folder)


def _walk(folder: Path) -> list[Path]:
    """Every entry below `folder`, sorted; symlinks are listed, never followed."""
    found = []
    for root, dirs, files in os.walk(folder):
        found += [Path(root) / name for name in [*dirs, *files]]
    return sorted(found)
