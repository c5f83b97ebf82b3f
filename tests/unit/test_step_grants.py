"""Step grants: the deployer and the rollback service act only on a deploy or compensation command the
coordinator signed for exactly that step, once, before the grant expires."""

from datetime import UTC, datetime, timedelta

import pytest

from contracts import topics
from contracts.cloudevents import Envelope, decode, encode
from contracts.events import BackupPoint, DeployAction, DeployRequested, RollbackRequested, Verdict
from releasegate_platform import supply_chain
from releasegate_runtime import grants
from releasegate_runtime.admission import spent_refusal
from services.coordinator import saga as domain
from services.coordinator import step_grants
from tests.support.saga import ENTRY, answer, candidate, run_until, with_migrations

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64
HOUR = timedelta(hours=1)
POINT = BackupPoint(
    backup_id=7,
    database="shop",
    path="/srv/releasegate/backups/shop-7.dump",
    sha256="sha256:" + "c" * 64,
    bytes=4096,
    kind="backup-point",
    taken_at=NOW - timedelta(minutes=5),
    release_id="rel-1",
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    private, public = supply_chain.keygen(directory, "coordinator")
    other, _ = supply_chain.keygen(directory, "mallory")
    return grants.load_grant_signer(private), grants.load_grant_key(public), grants.load_grant_signer(other)


def deploy(**over) -> DeployRequested:
    return DeployRequested(
        **{
            "release_id": "rel-1",
            "step_id": "canary-10",
            "service": "shop",
            "version": "v2",
            "digest": DIGEST,
            "environment": "production",
            "action": DeployAction.SHIFT,
            "weight": 10,
            "instances": 2,
            "tenants": ["acme"],
            "batch": 1,
            "batch_size": 1,
        }
        | over
    )


def restore(**over) -> RollbackRequested:
    return RollbackRequested(
        **{
            "release_id": "rel-1",
            "step_id": "compensate:production",
            "compensation": "restore_data",
            "service": "shop",
            "environment": "production",
            "candidate_version": "v2",
            "backup_id": 7,
            "backup_point": POINT,
            "since": NOW,
        }
        | over
    )


def granted(signer, command, issued_at=NOW, lifetime=HOUR):
    return grants.with_grant(signer, command, issued_at=issued_at, lifetime=lifetime)


def over_the_wire(command):
    """The command as the consumer decodes it from Kafka."""
    key, value, headers = encode(Envelope.new(command, "releasegate/coordinator", command.release_id))
    return decode(headers, value).data


class TestSigningAndChecking:
    @pytest.mark.parametrize(
        "command",
        [deploy(), restore(), restore(compensation="restore_traffic", backup_id=None, backup_point=None, since=None)],
    )
    def test_a_granted_command_verifies_after_crossing_kafka(self, keys, command):
        signer, public, _ = keys
        sent = granted(signer, command)
        assert grants.verify_grant(public, over_the_wire(sent), NOW + timedelta(seconds=5)) is None
        assert sent.grant.expires_at == NOW + HOUR and len(sent.grant.grant_id) == 32

    def test_every_grant_is_a_fresh_nonce(self, keys):
        signer, _, _ = keys
        assert granted(signer, deploy()).grant.grant_id != granted(signer, deploy()).grant.grant_id

    def test_a_command_without_a_grant_is_refused(self, keys):
        _, public, _ = keys
        assert "no step grant" in grants.verify_grant(public, deploy(), NOW)

    @pytest.mark.parametrize(
        "field, value",
        [
            ("release_id", "rel-2"),
            ("step_id", "canary-50"),
            ("service", "payments"),
            ("version", "v3"),
            ("digest", "sha256:" + "b" * 64),
            ("action", DeployAction.START),
            ("environment", "staging"),
            ("weight", 100),
            ("instances", 3),
            ("tenants", ["acme", "globex"]),
            ("tenants", None),
            ("batch", 2),
            ("batch_size", 2),
        ],
    )
    def test_a_deploy_command_changed_in_any_bound_field_is_refused(self, keys, field, value):
        signer, public, _ = keys
        forged = granted(signer, deploy()).model_copy(update={field: value})
        assert "does not verify" in grants.verify_grant(public, over_the_wire(forged), NOW)

    @pytest.mark.parametrize(
        "field, value",
        [
            ("release_id", "rel-2"),
            ("step_id", "compensate:staging"),
            ("service", "payments"),
            ("candidate_version", "v3"),
            ("compensation", "restore_traffic"),
            ("environment", "staging"),
            ("backup_id", 8),
            ("backup_id", None),
            ("backup_point", None),
            ("backup_point", POINT.model_copy(update={"path": "/srv/releasegate/backups/shop-6.dump"})),
            ("backup_point", POINT.model_copy(update={"sha256": "sha256:" + "d" * 64})),
            ("backup_point", POINT.model_copy(update={"database": "payments"})),
            ("since", NOW - HOUR),
        ],
    )
    def test_a_compensation_changed_in_any_bound_field_is_refused(self, keys, field, value):
        signer, public, _ = keys
        forged = granted(signer, restore()).model_copy(update={field: value})
        assert "does not verify" in grants.verify_grant(public, over_the_wire(forged), NOW)

    @pytest.mark.parametrize(
        "field, value",
        [("grant_id", "f" * 32), ("issued_at", NOW + timedelta(seconds=1)), ("expires_at", NOW + 2 * HOUR)],
    )
    def test_a_grant_changed_in_any_of_its_own_fields_is_refused(self, keys, field, value):
        signer, public, _ = keys
        command = granted(signer, deploy())
        forged = command.model_copy(update={"grant": command.grant.model_copy(update={field: value})})
        assert "does not verify" in grants.verify_grant(public, forged, NOW)

    def test_a_grant_is_not_valid_for_the_other_kind_of_command(self, keys):
        signer, public, _ = keys
        traffic = restore(compensation="restore_traffic", backup_id=None, backup_point=None, since=None)
        grant = granted(signer, traffic).grant
        assert (
            grants.verify_grant(public, traffic.model_copy(update={"step_id": "canary-10", "grant": grant}), NOW)
            is not None
        )

    def test_an_expired_grant_is_refused(self, keys):
        signer, public, _ = keys
        command = granted(signer, deploy(), lifetime=timedelta(minutes=3))
        assert grants.verify_grant(public, command, NOW + timedelta(minutes=3)) is None
        assert "expired" in grants.verify_grant(public, command, NOW + timedelta(minutes=3, seconds=1))

    def test_a_grant_issued_in_the_future_beyond_the_clock_skew_is_refused(self, keys):
        signer, public, _ = keys
        assert (
            grants.verify_grant(public, granted(signer, deploy(), issued_at=NOW + timedelta(seconds=60)), NOW) is None
        )
        assert "in the future" in grants.verify_grant(
            public, granted(signer, deploy(), issued_at=NOW + timedelta(seconds=61)), NOW
        )

    def test_a_valid_grant_from_another_key_is_refused(self, keys):
        _, public, mallory = keys
        assert "not the coordinator's" in grants.verify_grant(public, granted(mallory, deploy()), NOW)

    def test_another_key_posing_with_the_coordinators_keyid_is_refused(self, keys):
        _, public, mallory = keys
        command = granted(mallory, deploy())
        posing = command.model_copy(update={"grant": command.grant.model_copy(update={"keyid": public.keyid})})
        assert "does not verify" in grants.verify_grant(public, posing, NOW)

    def test_a_missing_key_file_says_what_is_missing(self, tmp_path):
        with pytest.raises(grants.GrantKeyError, match="coordinator.key"):
            grants.load_grant_signer(tmp_path / "coordinator.key")
        with pytest.raises(grants.GrantKeyError, match="coordinator.pub.json"):
            grants.load_grant_key(tmp_path / "coordinator.pub.json")


class TestSingleUse:
    def test_a_grant_not_yet_used_or_used_by_the_same_record_passes(self):
        assert spent_refusal("g" * 32, None, "event-1") is None
        assert spent_refusal("g" * 32, "event-1", "event-1") is None

    def test_a_grant_used_by_another_record_is_refused(self):
        assert "already used by event event-1" in spent_refusal("g" * 32, "event-1", "event-2")


class TestTheCoordinatorSigns:
    def test_deploy_commands_leave_with_a_grant_valid_for_the_step_timeout_plus_margin(self, keys):
        signer, public, _ = keys
        saga, sent = domain.start(candidate(), ENTRY, NOW, {}).saga, []
        while saga.waiting_for != "canary-10":
            decision = domain.handle(saga, answer(saga), NOW)
            sent += step_grants.signed(decision.commands, signer, NOW)
            saga = decision.saga
        deploys = [c for t, c in sent if t == topics.DEPLOY_COMMANDS]
        assert [c.step_id for c in deploys] == ["deploy-staging", "canary-start", "canary-internal", "canary-10"]
        for command in deploys:
            assert grants.verify_grant(public, over_the_wire(command), NOW) is None
            assert (
                command.grant.expires_at - command.grant.issued_at
                == timedelta(seconds=domain.STEP_TIMEOUTS["deploy"]) + step_grants.MARGIN
            )

    def test_a_rolling_rollback_redeploy_is_granted_like_a_slow_compensation(self, keys):
        signer, public, _ = keys
        command = deploy(step_id="compensate:production", action=DeployAction.RESTORE, weight=0, tenants=None)
        sent = granted(signer, command, lifetime=step_grants.lifetime(command))
        assert grants.verify_grant(public, over_the_wire(sent), NOW) is None
        assert (
            step_grants.lifetime(command)
            == timedelta(seconds=3 * domain.STEP_TIMEOUTS["rollback"]) + step_grants.MARGIN
        )

    def test_other_commands_leave_unchanged(self, keys):
        signer, _, _ = keys
        decision = domain.start(candidate(), ENTRY, NOW, {})
        assert step_grants.signed(decision.commands, signer, NOW) == decision.commands

    def test_a_data_restore_gets_three_times_the_rollback_timeout(self, keys):
        signer, public, _ = keys
        saga = run_until(with_migrations(), "verify-canary-internal")
        decision = domain.handle(saga, answer(saga, verdict=Verdict.FAIL), NOW)
        (command,) = [c for t, c in step_grants.signed(decision.commands, signer, NOW) if t == topics.ROLLBACK_COMMANDS]
        assert command.compensation == "restore_data" and command.backup_id == 7
        assert grants.verify_grant(public, over_the_wire(command), NOW) is None
        assert (
            command.grant.expires_at - command.grant.issued_at
            == timedelta(seconds=3 * domain.STEP_TIMEOUTS["rollback"]) + step_grants.MARGIN
        )

    def test_a_traffic_compensation_gets_the_rollback_timeout(self):
        command = restore(compensation="restore_traffic", backup_id=None, backup_point=None, since=None)
        assert step_grants.lifetime(command) == timedelta(seconds=domain.STEP_TIMEOUTS["rollback"]) + step_grants.MARGIN
