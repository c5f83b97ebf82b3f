"""Candidate processes get least privilege: an allow-listed environment, and a read-only bundle that is re-hashed
against its signed archive before every start."""

import os
import stat
from pathlib import Path

import pytest

from releasegate_platform.artifacts import ArtifactStore
from services.deployer.adapters.bundle_tree import remove_tree
from services.deployer.adapters.confinement import RunAs, as_user, candidate_env, private_home, unreachable
from services.deployer.adapters.launcher import Launcher
from services.deployer.config import DeployerSettings
from services.deployer.domain import DeployError
from shop import build_bundles

DEPLOYER_ENV = {
    "PATH": "/opt/py/bin:/usr/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "PYTHONPATH": "/work/main",
    "RG_KAFKA_PASSWORD": "deployer-secret",
    "RG_DATABASE_URL": "postgresql://rg:secret@db/releasegate",
    "RG_PRINCIPAL": "deployer",
    "AWS_SECRET_ACCESS_KEY": "x",
    "SHOP_STRAY": "from the deployer",
}
SHOP = {
    "SHOP_KAFKA_BOOTSTRAP": "127.0.0.1:19092",
    "SHOP_KAFKA_USERNAME": "shop",
    "SHOP_KAFKA_PASSWORD": "shop-pw",
    "SHOP_DATABASE_URL": "postgresql://shop@db/shop",
    "RG_KAFKA_BOOTSTRAP": "not for candidates",
}
INSTANCE = {"SHOP_PORT": "20101", "SHOP_ENVIRONMENT": "production", "SHOP_INSTANCE_ID": "production-s1-v2"}


class TestCandidateEnvironment:
    def test_only_path_locale_home_and_shop_settings_reach_the_candidate(self, tmp_path):
        env = candidate_env(DEPLOYER_ENV, SHOP, INSTANCE, tmp_path / "home")
        assert env == {
            "PATH": "/opt/py/bin:/usr/bin",
            "LANG": "C.UTF-8",
            "HOME": str(tmp_path / "home"),
            "TMPDIR": str(tmp_path / "home" / "tmp"),
            "PYTHONDONTWRITEBYTECODE": "1",
            **{k: v for k, v in SHOP.items() if k.startswith("SHOP_")},
            **INSTANCE,
        }

    def test_none_of_the_deployers_secrets_reach_the_candidate(self, tmp_path):
        values = set(candidate_env(DEPLOYER_ENV, SHOP, INSTANCE, tmp_path).values())
        assert not values & {
            "deployer-secret",
            "postgresql://rg:secret@db/releasegate",
            "from the deployer",
            "not for candidates",
            "/root",
            "/work/main",
        }

    def test_a_configured_candidate_path_replaces_the_deployers(self, tmp_path):
        assert candidate_env(DEPLOYER_ENV, SHOP, INSTANCE, tmp_path, "/opt/shop/bin")["PATH"] == "/opt/shop/bin"
        assert candidate_env({}, SHOP, INSTANCE, tmp_path)["PATH"] == "/usr/local/bin:/usr/bin:/bin"

    def test_the_shop_gets_its_own_kafka_principal_and_no_rg_settings(self, tmp_path):
        (tmp_path / "kafka").mkdir()
        (tmp_path / "kafka" / "shop.password").write_text("s3cret\n")
        env = DeployerSettings(secrets_dir=tmp_path, kafka_bootstrap="10.0.0.1:9092").shop_env("staging")
        assert env["SHOP_KAFKA_BOOTSTRAP"] == "10.0.0.1:9092"
        assert (env["SHOP_KAFKA_USERNAME"], env["SHOP_KAFKA_PASSWORD"]) == ("shop", "s3cret")
        assert env["SHOP_DATABASE_URL"].endswith("/shop_staging")
        assert all(name.startswith("SHOP_") for name in env)

    def test_a_missing_shop_password_is_a_clear_deploy_error(self, tmp_path):
        with pytest.raises(DeployError, match="no Kafka password for the shop principal shop"):
            DeployerSettings(secrets_dir=tmp_path).shop_env("production")

    def test_each_instance_gets_a_fresh_private_home(self, tmp_path):
        home = private_home(tmp_path / "homes" / "shop_production-s1", None)
        (home / "tmp" / "left-over").write_text("x")
        home = private_home(home, None)
        assert list((home / "tmp").iterdir()) == []
        assert stat.S_IMODE(home.stat().st_mode) == 0o700


NOBODY = RunAs("nobody", 65534, 65534)


class TestCandidateUser:
    def test_the_candidate_command_switches_user_with_no_new_privileges(self):
        assert as_user(RunAs("rg-candidate", 998, 997), ["python", "-m", "storefront"]) == [
            "setpriv",
            "--reuid=998",
            "--regid=997",
            "--init-groups",
            "--no-new-privs",
            "--",
            "python",
            "-m",
            "storefront",
        ]

    @pytest.mark.skipif(os.geteuid() != 0, reason="only root switches users")
    def test_an_interpreter_the_candidate_user_cannot_reach_is_named(self, tmp_path):
        private = tmp_path / "private" / "bin"
        private.mkdir(parents=True)
        (tmp_path / "private").chmod(0o700)
        (private / "python").write_text("#!/bin/sh\n")
        (private / "python").chmod(0o755)
        problem = unreachable("python", {"PATH": f"{private}:/usr/bin:/bin"}, NOBODY)
        assert problem is not None and f"{private}/python is not executable by nobody" in problem
        assert unreachable("sh", {"PATH": "/usr/bin:/bin"}, NOBODY) is None
        assert "not on the candidates' PATH" in unreachable("no-such-program", {"PATH": "/usr/bin"}, NOBODY)


@pytest.fixture
def bundle(tmp_path) -> tuple[Launcher, str]:
    """A launcher over a store holding the shop's v1 bundle (no database, HAProxy or process needed to unpack)."""
    store = tmp_path / "store"
    digest = build_bundles.store_blob(store, build_bundles.tarball(build_bundles.bundle_files("v1")))
    launcher = Launcher(
        None,
        None,
        ArtifactStore(store),
        tmp_path / "run",  # type: ignore[arg-type]
        lambda environment: {},
    )
    return launcher, digest


def folder_of(launcher: Launcher, digest: str) -> Path:
    return launcher._run / "bundles" / digest.removeprefix("sha256:")


def tamper(path: Path, content: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(content)
    path.chmod(0o444)


class TestBundleOnDisk:
    def test_an_unpacked_bundle_is_read_only_for_everyone(self, bundle):
        launcher, digest = bundle
        folder, manifest = launcher.unpack(digest)
        assert manifest["version"] == "v1"
        modes = {stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")] if p.is_dir()}
        assert modes == {0o555}
        assert {stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()} == {0o444}
        if os.geteuid() == 0:
            assert {p.stat().st_uid for p in folder.rglob("*")} == {0}

    def test_an_intact_bundle_is_used_again_without_unpacking(self, bundle):
        launcher, digest = bundle
        folder, _ = launcher.unpack(digest)
        inode = folder.stat().st_ino
        assert launcher.unpack(digest)[0].stat().st_ino == inode

    def test_a_modified_file_refuses_the_start_and_is_named(self, bundle):
        launcher, digest = bundle
        folder, _ = launcher.unpack(digest)
        tamper(folder / "storefront" / "payments.py", b"def authorize(*a, **k):\n    return 'stolen'\n")
        with pytest.raises(DeployError, match=r"file storefront/payments.py differs from the signed bundle"):
            launcher.unpack(digest)

    def test_an_added_file_refuses_the_start_and_is_named(self, bundle):
        launcher, digest = bundle
        folder, _ = launcher.unpack(digest)
        (folder / "storefront").chmod(0o755)
        (folder / "storefront" / "sitecustomize.py").write_text("import os\n")
        (folder / "storefront").chmod(0o555)
        with pytest.raises(DeployError, match=r"storefront/sitecustomize.py is not part of the signed bundle"):
            launcher.unpack(digest)

    def test_a_removed_file_refuses_the_start_and_is_named(self, bundle):
        launcher, digest = bundle
        folder, _ = launcher.unpack(digest)
        (folder / "storefront").chmod(0o755)
        (folder / "storefront" / "tax.py").unlink()
        (folder / "storefront").chmod(0o555)
        with pytest.raises(DeployError, match=r"file storefront/tax.py of the signed bundle is missing"):
            launcher.unpack(digest)

    def test_a_file_made_writable_refuses_the_start(self, bundle):
        launcher, digest = bundle
        folder, _ = launcher.unpack(digest)
        (folder / "storefront" / "app.py").chmod(0o666)
        with pytest.raises(DeployError, match=r"file storefront/app.py is writable"):
            launcher.unpack(digest)

    def test_a_folder_unpacked_before_bundles_were_sealed_is_unpacked_again(self, bundle):
        launcher, digest = bundle
        folder, _ = launcher.unpack(digest)
        remove_tree(folder)
        folder.mkdir(parents=True)
        (folder / "bundle.json").write_text("{}")
        assert launcher.unpack(digest)[1]["version"] == "v1"
