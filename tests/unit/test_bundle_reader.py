"""One bundle reader for the gatekeeper and the deployer: the same normalized names, whole files, and a refusal
(never a truncation) for anything a bundle must not hold — so no migration can run that the lint did not see."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from releasegate_platform import bundle_reader
from releasegate_platform.bundle_reader import BundleError, Limits
from services.deployer.adapters import bundle_tree, migrator
from services.deployer.domain import DeployError
from services.gatekeeper import migrations as lint
from services.gatekeeper.adapters import bundles

MANIFEST = b'{"service": "shop", "version": "v9"}'
DROP = b"SET lock_timeout = '2s';\nDROP TABLE orders;\n"


def bundle(tmp_path: Path, *entries: tuple[str, bytes | str | None], name: str = "b.tar.gz") -> Path:
    """A tar.gz of (name, content) entries: bytes is a file, None a directory, ("link", target) a symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for entry, content in entries:
            info = tarfile.TarInfo(entry)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                kind, _, target = content.partition(":")
                info.type = {
                    "symlink": tarfile.SYMTYPE,
                    "hardlink": tarfile.LNKTYPE,
                    "fifo": tarfile.FIFOTYPE,
                    "chardev": tarfile.CHRTYPE,
                }[kind]
                info.linkname = target
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    path = tmp_path / name
    path.write_bytes(buf.getvalue())
    return path


def linted(path: Path) -> dict[str, str]:
    """Migration name → kind, as the gatekeeper judges the bundle."""
    files = bundles.read(path)
    return {r.name: r.kind for r in lint.analyse_all(list(bundles.migrations(files).items()), use_squawk=False)}


class TestNormalizedNames:
    def test_a_migration_behind_dot_slash_is_linted_under_the_name_the_deployer_runs(self, tmp_path):
        path = bundle(
            tmp_path, ("./bundle.json", MANIFEST), ("./migrations/", None), ("./migrations/0009_drop.sql", DROP)
        )
        assert linted(path) == {"0009_drop.sql": "contract"}
        assert (
            set(bundle_tree.tree_of(path)[0]) == set(bundles.read(path)) == {"bundle.json", "migrations/0009_drop.sql"}
        )
        assert bundles.manifest(bundles.read(path))["version"] == "v9"

    @pytest.mark.parametrize("hidden", ["migrations//0009_drop.sql", "./././migrations/./0009_drop.sql"])
    def test_empty_and_dot_segments_are_dropped(self, tmp_path, hidden):
        assert linted(bundle(tmp_path, (hidden, DROP))) == {"0009_drop.sql": "contract"}

    @pytest.mark.parametrize(
        "twice",
        [
            ("migrations/0009.sql", "./migrations/0009.sql"),
            ("migrations/0009.sql", "migrations//0009.sql"),
            ("storefront/", "./storefront"),
        ],
    )
    def test_two_entries_with_one_name_after_normalizing_are_refused(self, tmp_path, twice):
        first, second = twice
        content = None if first.endswith("/") else b"SELECT 1;"
        path = bundle(tmp_path, (first, content), (second, content))
        with pytest.raises(BundleError, match="appears twice"):
            bundles.read(path)
        with pytest.raises(DeployError, match="appears twice"):
            bundle_tree.tree_of(path)

    @pytest.mark.parametrize(
        "entry, reason",
        [
            ("/etc/cron.d/job", "absolute path"),
            ("../outside.sql", "climbs out"),
            ("migrations/../../x.sql", "climbs out"),
            ("migrations/0009\n.sql", "control character"),
            ("migrations/0009\x00.sql", "control character"),
            ("migrations/0009\x85.sql", "control character"),
            ("migrations\\0009.sql", "backslash"),
            ("a" * 300, "longer than 255 bytes"),
            ("migrations/\udcff.sql", "not valid UTF-8"),
        ],
    )
    def test_names_that_cannot_be_one_file_in_the_bundle_are_refused(self, entry, reason):
        with pytest.raises(BundleError, match=reason):
            bundle_reader.normalize(entry)

    def test_a_file_that_is_also_a_directory_is_refused(self, tmp_path):
        with pytest.raises(BundleError, match="both a file and a directory"):
            bundles.read(bundle(tmp_path, ("migrations", b"x"), ("migrations/0009.sql", DROP)))


class TestEntryTypes:
    @pytest.mark.parametrize(
        "content, kind",
        [
            ("symlink:../../etc/passwd", "symbolic link"),
            ("hardlink:bundle.json", "hard link"),
            ("fifo:", "fifo"),
            ("chardev:", "device"),
        ],
    )
    def test_only_regular_files_and_directories_are_read(self, tmp_path, content, kind):
        path = bundle(tmp_path, ("bundle.json", MANIFEST), ("migrations/0009.sql", content))
        with pytest.raises(BundleError, match=kind):
            bundles.read(path)
        with pytest.raises(DeployError, match=kind):
            bundle_tree.tree_of(path)

    def test_a_file_that_is_not_a_tar_gz_is_a_bundle_error(self, tmp_path):
        (tmp_path / "x.tar.gz").write_bytes(b"not gzip")
        with pytest.raises(BundleError, match="cannot read bundle x.tar.gz"):
            bundles.read(tmp_path / "x.tar.gz")


class TestWholeFilesAndLimits:
    def test_a_drop_after_megabytes_of_padding_is_seen_by_the_lint(self, tmp_path):
        padded = b"-- " + b"x" * (5 << 20) + b"\n" + DROP
        assert linted(bundle(tmp_path, ("migrations/0009_drop.sql", padded))) == {"0009_drop.sql": "contract"}

    def test_a_file_over_the_limit_is_refused_not_truncated(self, tmp_path):
        path = bundle(tmp_path, ("migrations/0009.sql", b"-- " + b"x" * 100 + b"\n" + DROP))
        with pytest.raises(BundleError, match="over the limit of 64; refused, not truncated"):
            bundle_reader.read(path, Limits(file_bytes=64))
        big = bundle(tmp_path, ("bundle.json", b" " * (bundle_reader.MAX_FILE_BYTES + 1)), name="big.tar.gz")
        with pytest.raises(BundleError, match="refused, not truncated"):
            bundles.read(big)

    def test_files_over_the_total_are_refused(self, tmp_path):
        path = bundle(tmp_path, *((f"f{i}.txt", b"x" * 40) for i in range(5)))
        with pytest.raises(BundleError, match="more than 100 bytes"):
            bundle_reader.read(path, Limits(total_bytes=100))

    def test_too_many_entries_are_refused(self, tmp_path):
        path = bundle(tmp_path, *((f"d{i}/", None) for i in range(20)))
        with pytest.raises(BundleError, match="more than 10 entries"):
            bundle_reader.read(path, Limits(entries=10))

    def test_a_migration_that_is_not_utf8_is_refused_by_the_gatekeeper(self, tmp_path):
        with pytest.raises(BundleError, match="0009.sql is not UTF-8"):
            bundles.read(bundle(tmp_path, ("migrations/0009.sql", b"DROP TABLE \xff;")))


class TestSameMigrationsOnBothSides:
    def test_the_deployer_runs_exactly_the_migrations_the_gatekeeper_lints(self, tmp_path):
        path = bundle(
            tmp_path,
            ("bundle.json", MANIFEST),
            ("./migrations/0002_b.sql", b"SELECT 2;"),
            ("migrations/0001_a.sql", b"SELECT 1;"),
            ("migrations/nested/0003.sql", b"SELECT 3;"),
            ("migrations/readme.md", b"notes"),
            ("migrations/0004.sql.bak", b"SELECT 4;"),
            ("migrations/0005.sql/", None),
        )
        folder = tmp_path / "unpacked"
        folder.mkdir()
        bundle_tree.extract(path, folder)
        bundle_tree.seal(folder)
        try:
            assert bundle_tree.tree_problem(folder, *bundle_tree.tree_of(path)) is None
            assert (
                list(bundles.migrations(bundles.read(path)))
                == [p.name for p in migrator._files(folder)]
                == ["0001_a.sql", "0002_b.sql"]
            )
        finally:
            bundle_tree.remove_tree(folder)

    def test_extract_writes_whole_files_under_normalized_names(self, tmp_path):
        padded = b"-- " + b"x" * (5 << 20) + b"\n" + DROP
        path = bundle(tmp_path, ("./migrations/0009.sql", padded), ("storefront/app.py", b"print(1)\n"))
        folder = tmp_path / "unpacked"
        folder.mkdir()
        bundle_tree.extract(path, folder)
        assert (folder / "migrations" / "0009.sql").read_bytes() == padded
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
            "migrations",
            "migrations/0009.sql",
            "storefront",
            "storefront/app.py",
        ]

    def test_a_refused_bundle_is_not_extracted(self, tmp_path):
        path = bundle(tmp_path, ("bundle.json", MANIFEST), ("run.sh", "symlink:/bin/sh"))
        folder = tmp_path / "unpacked"
        folder.mkdir()
        with pytest.raises(DeployError, match="refusing bundle b.tar.gz: entry 'run.sh' is a symbolic link"):
            bundle_tree.extract(path, folder)
        assert list(folder.iterdir()) == []
