"""Who may see and do what through the API, from the groups a login proved. Pure. The coordinator remains the
authority on operator commands (it checks the attester's signature, the groups and the author again); the API
refuses early what would be refused anyway, so that a person sees why at once and nothing is published."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from contracts.events import TERMINAL_STATES, ReleaseState
from releasegate_platform.catalog import Approvers, OperatorAction, OperatorGroups

VIEWERS = "releasegate-viewers"
OPERATORS = "releasegate-operators"
Role = Literal["viewer", "operator", "approver", "ci"]
Action = Literal["approve", "exception", "go", "no-go", "abort", "pause", "resume", "promote", "promote-full"]
ACTIONS: tuple[Action, ...] = (
    "approve",
    "exception",
    "go",
    "no-go",
    "abort",
    "pause",
    "resume",
    "promote",
    "promote-full",
)
# the coordinator's rule (services/coordinator/control.py): the author of a change may stop its release, never push
# it on
AUTHOR_MAY: frozenset[Action] = frozenset({"abort", "pause"})
# in which states an action means something; the rest would only be refused by the coordinator
_WHEN: Mapping[Action, frozenset[ReleaseState]] = {
    "approve": frozenset({ReleaseState.RUNNING, ReleaseState.AWAITING_APPROVAL, ReleaseState.PAUSED}),
    "exception": frozenset({ReleaseState.WAITING_WINDOW, ReleaseState.AWAITING_APPROVAL, ReleaseState.RUNNING}),
    "go": frozenset({ReleaseState.PAUSED}),
    "no-go": frozenset({ReleaseState.PAUSED}),
    "abort": frozenset(
        {ReleaseState.RUNNING, ReleaseState.AWAITING_APPROVAL, ReleaseState.WAITING_WINDOW, ReleaseState.PAUSED}
    ),
    "pause": frozenset({ReleaseState.RUNNING}),
    "resume": frozenset({ReleaseState.PAUSED}),
    "promote": frozenset({ReleaseState.RUNNING}),
    "promote-full": frozenset({ReleaseState.RUNNING}),
}
_GROUPS_OF: Mapping[Action, OperatorAction | None] = {
    "approve": None,
    "exception": None,
    "go": "go",
    "no-go": "go",
    "abort": "abort",
    "pause": "pause",
    "resume": "resume",
    "promote": "promote",
    "promote-full": "promote",
}


@dataclass(frozen=True)
class Person:
    """A logged-in person: who, and the groups the token stated."""

    username: str
    subject: str
    groups: frozenset[str]

    @property
    def may_view(self) -> bool:
        return bool(self.groups)  # any group the installation gave them; an account with no group sees nothing


@dataclass(frozen=True)
class ReleaseRules:
    """What a release's stored saga says about who may act on it."""

    service: str
    state: ReleaseState
    author: str | None
    approver_group: str
    exception_group: str
    operators: OperatorGroups

    @classmethod
    def of(cls, service: str, state: str, body: Mapping[str, Any]) -> ReleaseRules:
        config = body.get("config") or {}
        approver = str(config.get("approver_group") or "approvers")
        exception = str(config.get("exception_group") or "release-managers")
        stored = body.get("operators")
        operators = (
            OperatorGroups.model_validate(stored)
            if stored
            else Approvers(group=approver, exception_group=exception).actions
        )
        author = (body.get("candidate") or {}).get("author")
        return cls(service, ReleaseState(state), author, approver, exception, operators)


def roles(person: Person, approver_groups: frozenset[str]) -> list[Role]:
    out: list[Role] = []
    if person.may_view:
        out.append("viewer")
    if OPERATORS in person.groups:
        out.append("operator")
    if person.groups & approver_groups:
        out.append("approver")
    return out


def groups_for(rules: ReleaseRules, action: Action) -> frozenset[str]:
    """The groups whose members may give `action` on this release, as the catalog entry the release started with
    named them (the shop's lets the on-call operators abort and pause)."""
    if action == "approve":
        return frozenset({rules.approver_group})
    if action == "exception":
        return frozenset({rules.exception_group})
    act = _GROUPS_OF[action]
    assert act is not None
    return rules.operators.groups(act)


def refusal(person: Person, rules: ReleaseRules, action: Action) -> str | None:
    """Why `person` may not give `action` on this release now; None if they may."""
    if rules.state in TERMINAL_STATES:
        return f"the release has ended ({rules.state.value}): nothing can be done on it"
    if rules.state not in _WHEN[action]:
        return f"{action} means nothing while the release is {rules.state.value.replace('_', ' ')}"
    if person.username == rules.author and action not in AUTHOR_MAY:
        return f"the author of a change cannot {'approve' if action in ('approve', 'exception', 'go', 'no-go') else action} it"
    allowed = groups_for(rules, action)
    if person.groups & allowed:
        return None
    return f"{person.username} is not in the {' or '.join(sorted(allowed))} group that may {action} {rules.service} releases"


INCIDENT_STATES = frozenset({ReleaseState.ROLLED_BACK, ReleaseState.ROLLBACK_FAILED})


def followup_refusal(person: Person, rules: ReleaseRules, *, closing: bool) -> str | None:
    """Why `person` may not add (or close) a follow-up of this release's incident; None if they may. The
    coordinator's rule (services/coordinator/control.py): the catalog's `followup` groups; the change's author may
    add one, never close one."""
    if rules.state not in INCIDENT_STATES:
        return f"the release is {rules.state.value.replace('_', ' ')}: only rolled-back releases have an incident"
    if closing and person.username == rules.author:
        return "the author of a change cannot close a follow-up of it"
    allowed_groups = rules.operators.groups("followup") or Approvers(
        group=rules.approver_group, exception_group=rules.exception_group
    ).actions.groups("followup")
    if person.groups & allowed_groups:
        return None
    return (
        f"{person.username} is not in the {' or '.join(sorted(allowed_groups))} group that may "
        f"{'close' if closing else 'add'} follow-ups of {rules.service} incidents"
    )


def allowed(person: Person, rules: ReleaseRules) -> list[Action]:
    return [a for a in ACTIONS if refusal(person, rules, a) is None]
