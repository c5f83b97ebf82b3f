"""Which compensations a failure runs: those the completed steps (and the step in flight) carry, latest first, one
per environment, the strongest of that environment's."""

from contracts.events import DeployAction
from services.coordinator import compensation
from services.coordinator.model import Saga, Step

POINT = {"backup_id": 7, "taken_at": "2026-11-27T12:00:00+00:00", "release_id": "rel-1"}


def step(step_id: str, environment: str, kind: str = "restore-traffic") -> Step:
    return Step(
        id=step_id,
        kind="deploy",
        environment=environment,
        action=DeployAction.SHIFT,
        weight=10,
        compensation=compensation.named(kind, environment),
    )


def saga(plan: list[Step], cursor: int, waiting_for: str | None = None, **fields) -> Saga:
    return Saga(
        release_id="rel-1",
        service="shop",
        version="v2",
        digest="sha256:" + "a" * 64,
        candidate={},
        plan=plan,
        cursor=cursor,
        waiting_for=waiting_for,
        **fields,
    )


PLAN = [
    step("deploy-staging", "staging"),
    Step(id="gate-production", kind="gate", environment="production"),
    step("migrate-production", "production", "restore-data"),
    step("canary-10", "production"),
    step("canary-50", "production"),
]


class TestWhatAFailureUndoes:
    def test_completed_steps_are_undone_latest_environment_first(self):
        comps = compensation.to_run(saga(PLAN, cursor=4, waiting_for="verify", backup_point=POINT))
        assert [(c.id, c.name) for c in comps] == [
            ("compensate:production", "restore-data-production"),
            ("compensate:staging", "restore-traffic-staging"),
        ]
        assert comps[0].undoes == ["canary-10", "migrate-production"]

    def test_the_step_in_flight_is_undone_too(self):
        comps = compensation.to_run(saga(PLAN, cursor=4, waiting_for="canary-50", backup_point=POINT))
        assert comps[0].undoes[0] == "canary-50"

    def test_steps_not_reached_are_not_undone(self):
        comps = compensation.to_run(saga(PLAN, cursor=1, waiting_for="gate-production"))
        assert [c.environment for c in comps] == ["staging"]

    def test_a_data_restore_without_a_backup_point_falls_back_to_traffic(self):
        comps = compensation.to_run(saga(PLAN, cursor=4, waiting_for="verify"))
        assert comps[0].name == "restore-traffic-production" and comps[0].kind == "restore_traffic"

    def test_a_redeploy_outranks_a_data_restore_in_the_same_environment(self):
        plan = [*PLAN[:3], step("roll-1", "production", "redeploy-stable")]
        comps = compensation.to_run(saga(plan, cursor=4, waiting_for="verify", backup_point=POINT))
        assert comps[0].name == "redeploy-stable-production" and comps[0].redeploy
