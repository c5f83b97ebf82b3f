"""The signed canary cookie: a per-machine key (releasegate_runtime/secrets.py), `rg_canary=<user>.<mac>` with
mac = HMAC-SHA256(key, user) cut to 32 hex digits (what HAProxy checks, deploy/haproxy/haproxy.cfg), and
`releasegate canary-cookie USER` that gives one to people of the identities file only."""

import base64
import hashlib
import hmac
import os
import re
import stat

import pytest
from typer.testing import CliRunner

from releasegate_cli.main import EXIT_ERROR, app
from releasegate_runtime import secrets

# the cookie pattern HAProxy accepts before it checks the mac (deploy/haproxy/haproxy.cfg)
HAPROXY_COOKIE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\.[0-9a-f]{32}$")


@pytest.fixture
def secrets_dir(tmp_path):
    assert secrets.ensure_canary_key(tmp_path)
    return tmp_path


class TestKey:
    def test_is_random_owner_only_and_never_replaced(self, secrets_dir, tmp_path_factory):
        path = secrets_dir / secrets.CANARY_KEY
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        key = secrets.canary_key(secrets_dir)
        assert len(key) == secrets.CANARY_KEY_BYTES
        assert not secrets.ensure_canary_key(secrets_dir) and secrets.canary_key(secrets_dir) == key
        other = tmp_path_factory.mktemp("other")
        secrets.ensure_canary_key(other)
        assert secrets.canary_key(other) != key

    def test_a_missing_key_says_who_can_read_it(self, tmp_path):
        with pytest.raises(secrets.CanaryError, match="cannot read the canary key .*stack's owner"):
            secrets.canary_key(tmp_path)

    @pytest.mark.parametrize(
        ("content", "why"), [("not base64!", "not base64"), (base64.b64encode(b"short").decode(), "fewer than 32")]
    )
    def test_a_damaged_key_is_refused_with_how_to_replace_it(self, tmp_path, content, why):
        (tmp_path / "haproxy").mkdir()
        (tmp_path / secrets.CANARY_KEY).write_text(content + "\n")
        with pytest.raises(secrets.CanaryError, match=why):
            secrets.canary_key(tmp_path)


class TestCookie:
    def test_is_the_user_and_the_truncated_hmac_of_it(self):
        key = bytes(range(32))
        expected = hmac.new(key, b"alice", hashlib.sha256).hexdigest()[:32]
        assert secrets.canary_cookie(key, "alice") == f"alice.{expected}"
        assert HAPROXY_COOKIE.match(secrets.canary_cookie(key, "alice"))

    def test_differs_per_user_and_per_key(self):
        key = bytes(32)
        macs = {secrets.canary_cookie(k, u).split(".")[1] for k in (key, bytes([1]) * 32) for u in ("alice", "bob")}
        assert len(macs) == 4

    @pytest.mark.parametrize("user", ["", "Alice", "a.b", "a b", "-a", "a" * 33, "al\u00efce", "a;b"])
    def test_refuses_what_is_not_a_user_name(self, user):
        with pytest.raises(secrets.CanaryError, match="not a user name"):
            secrets.canary_cookie(bytes(32), user)


class TestCommand:
    def test_prints_the_cookie_of_a_person_of_the_identities_file(self, secrets_dir, monkeypatch):
        monkeypatch.setenv("RG_SECRETS_DIR", str(secrets_dir))
        result = CliRunner().invoke(app, ["canary-cookie", "alice"])
        assert result.exit_code == 0, result.output
        expected = secrets.canary_cookie(secrets.canary_key(secrets_dir), "alice")
        assert result.stdout.strip() == f"rg_canary={expected}"

    def test_refuses_anyone_else(self, secrets_dir, monkeypatch):
        monkeypatch.setenv("RG_SECRETS_DIR", str(secrets_dir))
        result = CliRunner().invoke(app, ["canary-cookie", "mallory"])
        assert result.exit_code == EXIT_ERROR
        assert "internal users only" in result.output and "rg_canary=" not in result.output

    def test_without_the_key_says_so(self, tmp_path, monkeypatch):
        monkeypatch.setenv("RG_SECRETS_DIR", str(tmp_path))
        result = CliRunner().invoke(app, ["canary-cookie", "alice"])
        assert result.exit_code == EXIT_ERROR and "cannot read the canary key" in result.output
