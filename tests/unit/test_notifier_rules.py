"""The notifier's pure rules: which environment an event is about, which routes take it, the retry schedule, and
the catalog's route validation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from contracts.events import AlertRaised, ReleaseState, ReleaseStatusChanged, Severity
from releasegate_platform.catalog import NotificationRoute, Notifications
from services.notifier import domain
from services.notifier.domain import ReleaseContext, RetryPolicy

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
URL = "http://dash.test/releases/r-1"


def status(state: ReleaseState, step: str | None, **evidence) -> ReleaseStatusChanged:
    return ReleaseStatusChanged(
        release_id="r-1", service="shop", version="v3", state=state, step=step, actor="coordinator",
        reason="why", evidence=evidence,
    )  # fmt: skip


def route(**when) -> NotificationRoute:
    return NotificationRoute(name="ops", channel="slack", secret="notifier/ops.url", when=when)


class TestEnvironmentOfAnEvent:
    @pytest.mark.parametrize(
        ("step", "env"),
        [
            ("gate-staging", "staging"),
            ("verify-staging", "staging"),
            ("finalize-staging", "staging"),
            ("hold-production", "production"),
            ("canary-10", "production"),
            ("verify-canary-internal", "production"),
            ("verify-preview", "production"),
            ("roll-2", "production"),
            ("compensate:staging", "staging"),
            ("migrate-production", "production"),
            ("dr-check", None),
        ],
    )
    def test_step_names_their_environment(self, step, env):
        assert domain.step_environment(step, {}) == env

    def test_environment_in_the_evidence_wins(self):
        assert domain.step_environment("canary-10", {"environment": "eu-production"}) == "eu-production"

    def test_an_ended_release_is_about_the_furthest_environment_it_reached(self):
        # finalize-staging comes after production: a promoted release is still news about production
        ctx = domain.context_after(
            ReleaseContext("shop", "v3", "production"), status(ReleaseState.RUNNING, "finalize-staging")
        )
        n = domain.from_status("e1", AT, status(ReleaseState.PROMOTED, None), ctx, URL)
        assert (ctx.environment, n.environment, n.title) == (
            "production",
            "production",
            "shop v3: promoted in production",
        )

    def test_a_release_rolled_back_in_staging_stays_about_staging(self):
        ctx = domain.context_after(None, status(ReleaseState.RUNNING, "verify-staging"))
        n = domain.from_status("e1", AT, status(ReleaseState.ROLLED_BACK, None), ctx, URL)
        assert (n.environment, n.severity) == ("staging", "warning")

    def test_an_alert_takes_version_and_environment_from_the_release_context(self):
        alert = AlertRaised(release_id="r-1", service="shop", severity=Severity.CRITICAL, title="t", detail="d")
        n = domain.from_alert("e2", AT, alert, ReleaseContext("shop", "v3", "production"), URL)
        assert (n.kind, n.severity, n.version, n.environment, n.reason) == (
            "alert",
            "critical",
            "v3",
            "production",
            "d",
        )


class TestRouting:
    def n(self, state=ReleaseState.ROLLBACK_FAILED, step="compensate:production"):
        return domain.from_status("e1", AT, status(state, step), None, URL)

    def test_every_given_filter_must_match(self):
        r = route(environments=["production"], events=["rollback_failed"], severities=["critical"])
        assert domain.matches(r, self.n())
        assert not domain.matches(r, self.n(step="compensate:staging"))
        assert not domain.matches(route(events=["promoted"]), self.n())
        assert not domain.matches(route(severities=["info"]), self.n())

    def test_a_route_without_filters_takes_everything(self):
        assert domain.matches(route(), self.n(ReleaseState.RUNNING, "dr-check"))

    def test_an_unknown_environment_matches_only_routes_that_do_not_filter_on_it(self):
        n = self.n(ReleaseState.AWAITING_APPROVAL, "dr-check")
        assert n.environment is None
        assert not domain.matches(route(environments=["production"]), n)
        assert domain.matches(route(events=["awaiting_approval"]), n)

    def test_routes_for_keeps_the_catalog_order(self):
        routes = [route(events=["promoted"]), route(events=["rollback_failed"]), route()]
        assert domain.routes_for(routes, self.n()) == routes[1:]


class TestRetrySchedule:
    def test_doubles_from_the_initial_delay_up_to_the_cap_then_stops(self):
        policy = RetryPolicy(max_attempts=5, initial=2, cap=10, jitter=0.5)
        assert [policy.delay_after(a, rand=lambda: 0.0) for a in range(1, 6)] == [2, 4, 8, 10, None]

    def test_jitter_shortens_a_delay_by_at_most_its_fraction(self):
        policy = RetryPolicy(initial=2, cap=60, jitter=0.5)
        assert policy.delay_after(3, rand=lambda: 1.0) == 4.0
        assert policy.delay_after(3, rand=lambda: 0.25) == 7.0

    @pytest.mark.parametrize("bad", [{"max_attempts": 0}, {"initial": 0}, {"initial": 5, "cap": 1}, {"jitter": 2}])
    def test_an_unbounded_policy_is_refused(self, bad):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


class TestRouteValidation:
    @pytest.mark.parametrize(
        ("spec", "error"),
        [
            ({"channel": "slack", "secret": "https://hooks.slack.com/services/T/B/x"}, "secret"),
            ({"channel": "slack", "secret": "notifier/../../etc/passwd"}, "secret"),
            ({"channel": "slack"}, "needs `secret`"),
            ({"channel": "webhook", "secret": "notifier/hook.url"}, "signing_secret"),
            ({"channel": "slack", "secret": "notifier/a.url", "signing_secret": "notifier/k"}, "signing_secret"),
            ({"channel": "email"}, "`email`"),
            ({"channel": "pager", "secret": "notifier/a.url"}, "channel"),
            ({"channel": "slack", "secret": "notifier/a.url", "when": {"events": ["deployed"]}}, "events"),
            ({"channel": "slack", "secret": "notifier/a.url", "url": "https://x"}, "url"),
            ({"channel": "slack", "secret": "notifier/a.url", "when": {"environment": ["production"]}}, "environment"),
        ],
    )
    def test_a_bad_route_is_refused_with_a_clear_error(self, spec, error):
        with pytest.raises(ValidationError) as exc:
            NotificationRoute(name="r", **spec)
        assert error in str(exc.value)

    def test_route_names_are_unique(self):
        r = {"name": "ops", "channel": "slack", "secret": "notifier/ops.url"}
        with pytest.raises(ValidationError, match="route names repeat: ops"):
            Notifications(routes=[r, r])

    def test_the_shop_catalog_routes_validate(self):
        from pathlib import Path

        from releasegate_platform.catalog import Catalog

        routes = Catalog(Path(__file__).resolve().parents[2] / "catalog").get("shop").notifications.routes
        assert [r.name for r in routes] == ["ops-slack"]
