"""Signed approvals: an approval counts only with a valid signature by the approver's own key."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from services.common import identity, supply_chain
from services.common.identity import Identities, IdentityError

REPO = Path(__file__).resolve().parents[2]
SIGNED_AT = datetime(2025, 5, 8, 10, 41, tzinfo=timezone.utc)
APPROVAL = {"release_id": "shop-v3-1a2b3c4d", "actor": "alice", "kind": "approval",
            "reason": "payments change reviewed", "signed_at": SIGNED_AT}


@pytest.fixture
def keys(tmp_path) -> dict[str, Path]:
    return {name: supply_chain.keygen(tmp_path / "keys", name)[0] for name in ("alice", "bob")}


@pytest.fixture
def people(tmp_path, keys) -> Identities:
    def pub(name: str) -> dict:
        return json.loads(keys[name].with_suffix(".pub.json").read_text())
    path = tmp_path / "identities.yaml"
    path.write_text(yaml.safe_dump({"people": {
        "alice": {"groups": ["shop-approvers"], "keys": [pub("alice")]},
        "bob": {"groups": ["shop-approvers", "release-managers"], "keys": [pub("bob")]},
    }}))
    return Identities.load(path)


def signed(key: Path, **changes) -> dict:
    approval = {**APPROVAL, **changes}
    keyid, signature = identity.sign_approval(key, **approval)
    return {**approval, "keyid": keyid, "signature": signature}


class TestSignedApprovals:
    def test_accepts_an_approval_signed_with_the_approvers_key(self, keys, people):
        assert identity.verify_approval(people, **signed(keys["alice"])) is None

    def test_refuses_an_approval_whose_reason_was_altered(self, keys, people):
        approval = {**signed(keys["alice"]), "reason": "ship it anyway"}
        assert identity.verify_approval(people, **approval) == "signature does not verify with alice's key"

    def test_refuses_an_approval_signed_with_another_persons_key(self, keys, people):
        approval = signed(keys["bob"])
        assert identity.verify_approval(people, **approval) == "signature does not verify with alice's key"

    def test_refuses_an_unknown_identity(self, keys, people):
        approval = signed(keys["alice"], actor="mallory")
        assert identity.verify_approval(people, **approval) == "mallory is not a known identity"

    def test_refuses_an_unsigned_approval(self, people):
        assert identity.verify_approval(people, **APPROVAL, keyid=None, signature=None) == (
            "no signature: approvals must be signed with the approver's key")

    def test_refuses_a_garbled_signature(self, keys, people):
        approval = {**signed(keys["alice"]), "signature": "not hex"}
        assert identity.verify_approval(people, **approval) == "signature does not verify with alice's key"

    def test_accepts_the_same_moment_written_in_another_time_zone(self, keys, people):
        approval = {**signed(keys["alice"]), "signed_at": SIGNED_AT.astimezone(timezone(timedelta(hours=-5)))}
        assert identity.verify_approval(people, **approval) is None

    def test_payload_is_canonical_json_with_the_time_in_utc(self):
        payload = json.loads(identity.approval_payload(**APPROVAL))
        assert payload["signed_at"] == "2025-05-08T10:41:00Z" and payload["actor"] == "alice"
        assert identity.approval_payload(**APPROVAL) == identity.approval_payload(**dict(reversed(APPROVAL.items())))


class TestIdentities:
    def test_knows_each_persons_groups_and_each_groups_members(self, people):
        assert people.groups_of("bob") == {"shop-approvers", "release-managers"}
        assert people.groups_of("nobody") == frozenset()
        assert people.members("shop-approvers") == {"alice", "bob"}
        assert people.digest.startswith("sha256:")

    def test_refuses_a_malformed_identities_file(self, tmp_path):
        path = tmp_path / "identities.yaml"
        path.write_text("people:\n  alice:\n    keys: [{keytype: rsa}]\n")
        with pytest.raises(IdentityError):
            Identities.load(path)

    def test_repository_identities_list_the_demo_people_with_their_demo_keys(self):
        people = Identities.load(REPO / "policies/identities.yaml")
        assert people.members("shop-approvers") == {"alice", "bob", "carol"}
        assert people.members("release-managers") == {"carol", "dave"}
        assert people.groups_of("dev") == {"developers"}
        for name in people.people:
            key = REPO / f"examples/keys/{name}.key"
            assert identity.verify_approval(people, **signed(key, actor=name)) is None, name
