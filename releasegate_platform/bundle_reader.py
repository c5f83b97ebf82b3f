"""The one way a release bundle (tar.gz) is read: by the gatekeeper, to judge what it contains, and by the
deployer, to unpack and run it. Both must see the same files, or a migration could pass the lint under one name
(`./migrations/…`, `migrations//…`) and run under another, or hide past a truncation point.

So every entry name is normalized the same way (`./` and empty segments dropped), and a bundle is refused, with
the entry named, when a name is absolute, climbs with `..`, holds control characters or appears twice after
normalization; when an entry is anything but a regular file or a directory (links, devices, fifos, sparse
files); and when a file, all files together or the number of entries exceed a limit. Files are read whole:
a bundle over a limit is refused, never cut short."""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_FILE_BYTES = 8 << 20
MAX_TOTAL_BYTES = 64 << 20
MAX_ENTRIES = 10_000
MAX_NAME_CHARS = 1024
MAX_SEGMENT_BYTES = 255
MIGRATIONS_DIR = "migrations"


class BundleError(Exception):
    """The bundle cannot be read, or holds something a bundle must not; the message names the entry."""


@dataclass(frozen=True)
class Bundle:
    """Normalized relative path → content of every file, and every directory (listed or implied by a file)."""

    files: Mapping[str, bytes]
    dirs: frozenset[str]


@dataclass(frozen=True)
class Limits:
    file_bytes: int = MAX_FILE_BYTES
    total_bytes: int = MAX_TOTAL_BYTES
    entries: int = MAX_ENTRIES


def normalize(name: str) -> str:
    """The entry's relative path with `./`, `.` and empty segments dropped; BundleError when it is absolute,
    climbs out with `..`, holds a control character or a backslash, or is not valid UTF-8."""
    shown = repr(name[:120])
    if len(name) > MAX_NAME_CHARS:
        raise BundleError(f"entry name {shown}… is longer than {MAX_NAME_CHARS} characters")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name):
        raise BundleError(f"entry name {shown} holds a control character")
    if "\\" in name:
        raise BundleError(f"entry name {shown} holds a backslash")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(f"entry name {shown} is not valid UTF-8") from None
    if name.startswith("/"):
        raise BundleError(f"entry {shown} is an absolute path; bundle entries are relative")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BundleError(f"entry {shown} climbs out of the bundle with '..'")
    if any(len(p.encode()) > MAX_SEGMENT_BYTES for p in parts):
        raise BundleError(f"entry {shown} has a path segment longer than {MAX_SEGMENT_BYTES} bytes")
    return "/".join(parts)


def read(path: Path, limits: Limits = Limits()) -> Bundle:
    """Every file and directory of the bundle at `path`, checked as the module says."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            return _read(tar, limits)
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise BundleError(f"cannot read bundle {path.name}: {exc}") from None


def _read(tar: tarfile.TarFile, limits: Limits) -> Bundle:
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > limits.entries:
            raise BundleError(f"bundle has more than {limits.entries} entries")
        name = normalize(member.name)
        # Data of any entry type is decompressed to reach the next header: it counts towards the total.
        total += member.size
        if total > limits.total_bytes:
            raise BundleError(
                f"bundle holds more than {limits.total_bytes} bytes (at entry {name!r}); refused, not truncated"
            )
        if member.isdir():
            if name in dirs or name in files:
                raise BundleError(f"entry {name!r} appears twice in the bundle (after normalizing {member.name!r})")
            if name:
                dirs.add(name)
            continue
        if not member.isfile() or member.issparse():
            raise BundleError(
                f"entry {name or member.name!r} is a {_kind(member)}; a bundle holds only regular files and directories"
            )
        if not name:
            raise BundleError(f"entry {member.name!r} is a file without a name")
        if name in files or name in dirs:
            raise BundleError(f"entry {name!r} appears twice in the bundle (after normalizing {member.name!r})")
        if member.size > limits.file_bytes:
            raise BundleError(
                f"file {name!r} is {member.size} bytes, over the limit of {limits.file_bytes}; refused, not truncated"
            )
        content = tar.extractfile(member).read()  # type: ignore[union-attr]
        if len(content) != member.size:
            raise BundleError(f"file {name!r} is cut short: {len(content)} of {member.size} bytes")
        files[name] = content
    parents = {p.as_posix() for name in files for p in PurePosixPath(name).parents if p != PurePosixPath(".")}
    clash = sorted(parents & set(files))
    if clash:
        raise BundleError(f"entry {clash[0]!r} is both a file and a directory in the bundle")
    return Bundle(files, frozenset(dirs | parents))


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symbolic link to {member.linkname[:120]!r}"
    if member.islnk():
        return f"hard link to {member.linkname[:120]!r}"
    if member.issparse():
        return "sparse file"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    return f"entry of tar type {member.type!r}"


def is_migration(path: str) -> bool:
    """Whether a normalized bundle path is a migration the deployer runs: a `.sql` file directly in
    `migrations/` (the gatekeeper lints exactly these)."""
    folder, _, file = path.rpartition("/")
    return folder == MIGRATIONS_DIR and file.endswith(".sql")


def migrations(files: Mapping[str, bytes]) -> dict[str, str]:
    """Migration file name → SQL, in the order they apply (file name order); BundleError if one is not UTF-8
    (PostgreSQL would not read what the lint read)."""
    out = {}
    for path in sorted(p for p in files if is_migration(p)):
        try:
            out[path.rpartition("/")[2]] = files[path].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleError(f"migration {path} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return out
