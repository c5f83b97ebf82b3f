"""Signed operator commands: an approval, abort, pause, resume or promotion counts only with a valid signature by
its actor's own key over all of it; demo keys are trusted on the local stack only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from contracts.events import AbortRequested, ApprovalGiven, Attestation, PromoteRequested, ResumeRequested
from releasegate_platform import identity, supply_chain
from releasegate_platform.identity import DemoKeyError, Identities, IdentityError
from releasegate_runtime.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
SIGNED_AT = datetime(2025, 5, 8, 10, 41, tzinfo=UTC)
APPROVAL = ApprovalGiven(
    release_id="shop-v3-1a2b3c4d", actor="alice", kind="approval", reason="payments change reviewed"
)


@pytest.fixture
def keys(tmp_path) -> dict[str, Path]:
    return {name: supply_chain.keygen(tmp_path / "keys", name)[0] for name in ("alice", "bob")}


@pytest.fixture
def people(tmp_path, keys) -> Identities:
    def pub(name: str) -> dict:
        return json.loads(keys[name].with_suffix(".pub.json").read_text())

    path = tmp_path / "identities.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "people": {
                    "alice": {"groups": ["shop-approvers"], "keys": [pub("alice")]},
                    "bob": {"groups": ["shop-approvers", "release-managers"], "keys": [pub("bob")]},
                }
            }
        )
    )
    return Identities.load(path)


def signed(key: Path, **changes) -> dict:
    """An approval signed with `key`, as the keyword arguments the gatekeeper re-verifies it with."""
    approval = identity.sign_command(key, APPROVAL.model_copy(update=changes), now=SIGNED_AT).signed()
    return {"release_id": APPROVAL.release_id, **approval.model_dump()}


class TestSignedApprovals:
    def test_accepts_an_approval_signed_with_the_approvers_key(self, keys, people):
        assert identity.verify_approval(people, **signed(keys["alice"])) is None

    def test_refuses_an_approval_whose_reason_was_altered(self, keys, people):
        approval = {**signed(keys["alice"]), "reason": "ship it anyway"}
        assert identity.verify_approval(people, **approval) == "signature does not verify with alice's key"

    def test_refuses_an_approval_whose_nonce_was_swapped(self, keys, people):
        approval = {**signed(keys["alice"]), "nonce": identity.new_nonce()}
        assert identity.verify_approval(people, **approval) == "signature does not verify with alice's key"

    def test_refuses_an_approval_signed_with_another_persons_key(self, keys, people):
        approval = signed(keys["bob"])
        assert identity.verify_approval(people, **approval) == "signature does not verify with alice's key"

    def test_refuses_an_unknown_identity(self, keys, people):
        approval = signed(keys["alice"], actor="mallory")
        assert identity.verify_approval(people, **approval) == "mallory is not a known identity"

    def test_refuses_an_unsigned_approval(self, keys, people):
        approval = {**signed(keys["alice"]), "keyid": None, "signature": None}
        assert identity.verify_approval(people, **approval) == identity.NO_SIGNATURE

    def test_refuses_a_garbled_signature(self, keys, people):
        approval = {**signed(keys["alice"]), "signature": "not hex"}
        assert identity.verify_approval(people, **approval) == "signature does not verify with alice's key"

    def test_accepts_the_same_moment_written_in_another_time_zone(self, keys, people):
        approval = {**signed(keys["alice"]), "signed_at": SIGNED_AT.astimezone(timezone(timedelta(hours=-5)))}
        assert identity.verify_approval(people, **approval) is None

    def test_an_approval_as_the_coordinator_got_it_verifies_as_the_gatekeeper_re_verifies_it(self, keys, people):
        given = identity.sign_command(keys["alice"], APPROVAL)
        assert identity.verify_command(people, given) is None
        assert identity.verify_approval(people, release_id=given.release_id, **given.signed().model_dump()) is None


class TestSignedOperatorCommands:
    def test_payload_is_canonical_json_bound_to_the_event_type_with_the_time_in_utc(self):
        fields = {"release_id": "r", "actor": "alice", "reason": "why", "nonce": "ab" * 16, "signed_at": SIGNED_AT}
        payload = json.loads(identity.command_payload(event_type=AbortRequested.event_type, **fields))
        assert payload == {
            "_type": identity.OPERATOR_COMMAND_TYPE,
            "event_type": AbortRequested.event_type,
            "release_id": "r",
            "actor": "alice",
            "reason": "why",
            "nonce": "ab" * 16,
            "signed_at": "2025-05-08T10:41:00Z",
        }
        assert identity.command_payload(event_type="t", **fields) == identity.command_payload(
            event_type="t", **dict(reversed(fields.items()))
        )

    def test_each_signature_gets_a_new_nonce(self, keys):
        abort = AbortRequested(release_id="r", actor="alice", reason="stop")
        first, second = (identity.sign_command(keys["alice"], abort) for _ in range(2))
        assert first.nonce != second.nonce and len(first.nonce) == 32

    def test_an_abort_signature_is_no_resume_signature(self, keys, people):
        abort = identity.sign_command(keys["alice"], AbortRequested(release_id="r", actor="alice", reason="stop"))
        resume = ResumeRequested.model_validate(abort.model_dump())
        assert identity.verify_command(people, abort) is None
        assert identity.verify_command(people, resume) == "signature does not verify with alice's key"

    def test_a_commands_own_fields_are_signed_too(self, keys, people):
        promote = identity.sign_command(keys["bob"], PromoteRequested(release_id="r", actor="bob", reason="now"))
        assert identity.verify_command(people, promote) is None
        assert identity.verify_command(people, promote.model_copy(update={"full": False})) is not None

    def test_an_unsigned_command_is_refused_as_unsigned(self, people):
        assert identity.verify_command(people, AbortRequested(release_id="r", actor="alice", reason="stop")) == (
            identity.NO_SIGNATURE
        )

    def test_finds_whose_key_a_key_file_is(self, keys, people):
        assert people.owner(identity.key_id(keys["bob"])) == "bob"
        assert people.owner("0" * 64) is None


def settings_trusting(tmp_path: Path, env: str, *, identities: Path | None = None) -> ServiceSettings:
    policy = tmp_path / "policy"
    policy.mkdir(exist_ok=True)
    (policy / "identities.yaml").write_text((identities or REPO / "policies/identities.yaml").read_text())
    (policy / "trust-root.yaml").write_text((REPO / "policies/trust-root.yaml").read_text())
    return ServiceSettings(env=env, policy_dir=policy)


class TestDemoKeys:
    def test_demo_keys_are_refused_outside_the_local_stack(self, tmp_path):
        with pytest.raises(
            DemoKeyError, match="identities.yaml trusts alice, bob, carol, dave, dev.*trust-root.yaml trusts ci-builder"
        ):
            identity.refuse_demo_keys(settings_trusting(tmp_path, "production"))

    def test_demo_keys_are_accepted_on_the_local_stack(self, tmp_path):
        identity.refuse_demo_keys(settings_trusting(tmp_path, "local"))

    def test_own_keys_are_accepted_anywhere(self, tmp_path, people, keys):
        settings = settings_trusting(tmp_path, "production", identities=tmp_path / "identities.yaml")
        (settings.trust_root_file).write_text("version: 1\nbuilders: {}\n")
        identity.refuse_demo_keys(settings)

    def test_a_demo_key_is_recognised_by_its_key_not_by_a_name(self, tmp_path):
        carol = json.loads((REPO / "examples/keys/carol.pub.json").read_text())
        del carol["keyid"]
        own = tmp_path / "own.yaml"
        own.write_text(yaml.safe_dump({"people": {"erin": {"groups": ["release-managers"], "keys": [carol]}}}))
        settings = settings_trusting(tmp_path, "staging", identities=own)
        settings.trust_root_file.write_text("version: 1\nbuilders: {}\n")
        with pytest.raises(DemoKeyError, match="trusts carol"):
            identity.refuse_demo_keys(settings)


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
            assert people.owner(identity.key_id(key)) == name


class TestAttestedCommands:
    """The API signs for a person its OIDC login proved: the command counts with the attester's signature and
    the token's groups, and only from an attester whose key the reader holds."""

    ATTESTATION = dict(by="api", issuer="http://127.0.0.1:19400", subject="0a1b2c", groups=["shop-approvers"])

    @pytest.fixture
    def api_key(self, tmp_path) -> Path:
        return supply_chain.keygen(tmp_path / "keys", "api")[0]

    @pytest.fixture
    def trusting(self, people, api_key) -> Identities:
        return people.with_attester("api", identity.load_public_key(api_key.with_suffix(".pub.json")))

    def attested(self, api_key: Path, actor: str = "erin", **attestation) -> AbortRequested:
        command = AbortRequested(release_id="shop-v3-1a2b3c4d", actor=actor, reason="checkout errors")
        return identity.attest_command(
            api_key, command, Attestation(**{**self.ATTESTATION, **attestation}), now=SIGNED_AT
        )

    def test_an_attested_command_verifies_with_the_attesters_key_for_a_person_not_in_the_file(self, api_key, trusting):
        command = self.attested(api_key)
        assert identity.verify_command(trusting, command) is None
        assert trusting.groups_for(command.actor, command.attested) == {"shop-approvers"}

    def test_the_attestation_is_signed_so_groups_cannot_be_added_in_transit(self, api_key, trusting):
        command = self.attested(api_key)
        forged = command.model_copy(
            update={"attested": command.attested.model_copy(update={"groups": ["shop-approvers", "release-managers"]})}
        )
        assert "does not verify with the attester api's key" in identity.verify_command(trusting, forged)

    def test_an_attestation_is_not_trusted_without_the_attesters_key(self, api_key, people):
        assert "not a trusted attester" in identity.verify_command(people, self.attested(api_key))

    def test_a_person_cannot_pose_as_the_attester_with_their_own_key(self, keys, trusting):
        command = self.attested(keys["alice"], actor="alice")
        assert "does not verify with the attester api's key" in identity.verify_command(trusting, command)

    def test_removing_the_attestation_leaves_a_signature_that_is_nobodys(self, api_key, trusting):
        command = self.attested(api_key, actor="alice").model_copy(update={"attested": None})
        assert "does not verify with alice's key" in identity.verify_command(trusting, command)

    def test_an_attested_approval_is_re_verified_by_the_gatekeeper_with_its_groups(self, api_key, trusting):
        approval = identity.attest_command(
            api_key, APPROVAL.model_copy(update={"actor": "erin"}), Attestation(**self.ATTESTATION), now=SIGNED_AT
        ).signed()
        args = {"release_id": APPROVAL.release_id, **approval.model_dump()}
        args["attested"] = approval.attested
        assert identity.verify_approval(trusting, **args) is None

    def test_load_identities_trusts_only_attesters_whose_key_file_exists(self, tmp_path, api_key):
        path = tmp_path / "identities.yaml"
        path.write_text(yaml.safe_dump({"people": {}}))
        loaded = identity.load_identities(
            path, {"api": api_key.with_suffix(".pub.json"), "other": tmp_path / "missing.pub.json"}
        )
        assert set(loaded.attesters) == {"api"}
