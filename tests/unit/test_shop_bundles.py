"""The shop's release bundles: deterministic, clean, and v3 carries the payments regression."""

import gzip
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from shop import build_bundles

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def digests(store) -> dict[str, str]:
    return build_bundles.build_all(store)


def members(store: Path, digest: str) -> dict[str, tarfile.TarInfo | bytes]:
    blob = (store / "sha256" / f"{digest.removeprefix('sha256:')}.tar.gz").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else m) for m in tar.getmembers()}


def test_building_twice_gives_identical_digests(digests, tmp_path):
    assert build_bundles.build_all(tmp_path) == digests
    assert set(digests) == {"v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11", "v12"}
    assert len(set(digests.values())) == len(digests)


def test_stored_file_is_named_by_its_sha256(store, digests):
    import hashlib

    for digest in digests.values():
        path = store / "sha256" / f"{digest.removeprefix('sha256:')}.tar.gz"
        assert f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}" == digest


def test_archive_metadata_is_normalised(store, digests):
    blob = (store / "sha256" / f"{digests['v1'].removeprefix('sha256:')}.tar.gz").read_bytes()
    assert blob[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        infos = tar.getmembers()
    assert [m.name for m in infos] == sorted(m.name for m in infos)
    for m in infos:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() else 0o644)


def test_bundle_layout_and_declared_version(store, digests):
    for version, digest in digests.items():
        files = members(store, digest)
        manifest = json.loads(files["bundle.json"])
        assert {k: manifest[k] for k in ("service", "version", "entrypoint")} == {
            "service": "shop",
            "version": version,
            "entrypoint": ["python", "-m", "storefront"],
        }
        assert "orders.id" in manifest["schema_uses"]
        assert {"storefront/__main__.py", "storefront/app.py", "storefront/payments.py"} <= set(files)


def test_bundles_contain_no_bytecode_even_when_the_source_tree_has_some(tmp_path, monkeypatch):
    base = tmp_path / "bundle_src"
    shutil.copytree(build_bundles.BASE, base, ignore=shutil.ignore_patterns("__pycache__"))
    (base / "storefront" / "__pycache__").mkdir()
    (base / "storefront" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    (base / "storefront" / "stray.pyc").write_bytes(b"junk")
    clean = build_bundles.tarball(build_bundles.bundle_files("v1"))
    monkeypatch.setattr(build_bundles, "BASE", base)
    files = build_bundles.bundle_files("v1")
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    assert build_bundles.tarball(files) == clean


def test_v3_carries_the_payments_regression_and_v2_does_not(store, digests):
    v1, v2, v3 = (members(store, digests[v]) for v in ("v1", "v2", "v3"))
    assert v2["storefront/payments.py"] == v1["storefront/payments.py"]
    assert v3["storefront/payments.py"] != v2["storefront/payments.py"]
    assert v3["storefront/payments.py"] == (REPO / "shop/versions/v3/storefront/payments.py").read_bytes()
    assert v3["storefront/catalog.py"] == v2["storefront/catalog.py"] != v1["storefront/catalog.py"]


def test_v8_and_v9_change_only_tax_and_erp_export_of_v2(store, digests):
    def changed(a: str, b: str) -> set[str]:
        files_a, files_b = (
            {name: data for name, data in members(store, digests[v]).items() if isinstance(data, bytes)} for v in (a, b)
        )
        return {name for name in files_a.keys() | files_b.keys() if files_a.get(name) != files_b.get(name)}

    assert changed("v2", "v8") == {"bundle.json", "storefront/tax.py"}
    assert changed("v2", "v9") == {"bundle.json", "storefront/erp.py"}


def test_example_candidates_point_at_the_current_bundles(digests):
    for version, digest in digests.items():
        candidate = json.loads((REPO / f"examples/candidates/shop-{version}.json").read_text())
        assert candidate == build_bundles.candidate(version, digest), (
            "examples/candidates are stale: run `python -m shop.build_bundles --write-candidates`"
        )
        assert candidate["artifact"]["uri"] == f"store://sha256/{digest.removeprefix('sha256:')}"
        assert len(candidate["source"]["commit"]) == 40


def test_every_version_publishes_its_business_events_through_the_same_outbox(store, digests):
    """No overlay replaces the outbox path, so every version's confirmed orders have their order.placed."""
    outbox_path = ["storefront/outbox.py", "storefront/events.py", "storefront/db.py", "storefront/runtime.py"]
    base = {name: (REPO / "shop/bundle_src" / name).read_bytes() for name in outbox_path}
    for version, digest in digests.items():
        files = members(store, digest)
        assert {name: files[name] for name in outbox_path} == base, version
        uses = json.loads(files["bundle.json"])["schema_uses"]
        assert {"event_outbox.id", "event_outbox.value", "event_outbox.sent_at"} <= set(uses), version


def test_the_declared_schema_uses_are_the_tables_and_columns_the_base_schema_creates():
    import pglast
    from pglast import ast

    sys.path.insert(0, str(REPO / "shop" / "bundle_src"))
    from storefront import db

    created = {
        f"{s.stmt.relation.relname}.{e.colname}"
        for s in pglast.parse_sql(db.SCHEMA)
        if isinstance(s.stmt, ast.CreateStmt)
        for e in s.stmt.tableElts
        if isinstance(e, ast.ColumnDef)
    }
    created |= {f"{table}.{column}" for table, columns in db.ADDED_COLUMNS.items() for column in columns}
    uses = set(json.loads((REPO / "shop/bundle_src/bundle.json").read_text())["schema_uses"])
    assert uses <= created, f"declared but never created: {sorted(uses - created)}"
    assert {u.split(".")[0] for u in uses} == {c.split(".")[0] for c in created}, "a created table is not declared"
