"""Operator commands before the saga acts on them: who signed one, when, whether it was seen before, and whether
the signer may give it for this release. Pure: the handler reads the identities file and the nonce ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from contracts.events import (
    AbortRequested,
    ApprovalGiven,
    FollowupAdded,
    FollowupClosed,
    OperatorCommand,
    PauseRequested,
    PromoteRequested,
    ResumeRequested,
)
from releasegate_platform import identity
from releasegate_platform.catalog import Approvers, OperatorAction

if TYPE_CHECKING:
    from services.coordinator.model import Saga

# Clocks differ: a command may say it was signed up to this far in the future, no further.
MAX_CLOCK_SKEW = timedelta(seconds=60)
# Abort, pause, resume, promote and go/no-go act now or never, so a captured one is worthless after this.
# Approvals and exceptions count for the policy's time instead (`approvals.ttl_seconds`, judged by the gate).
COMMAND_VALIDITY = timedelta(minutes=10)
# The author of a change may stop its release, never push it on; and may add follow-ups to its incident (they know
# best what was learnt), never close one (that is for someone else to judge done).
AUTHOR_MAY: frozenset[str] = frozenset({"abort", "pause", "followup"})

Action = Literal["approval", "exception", "abort", "pause", "resume", "promote", "go", "followup", "followup-close"]
_AUTHOR_CANNOT = {
    "approval": "approve",
    "exception": "approve",
    "go": "approve",
    "resume": "resume",
    "promote": "promote",
    "followup-close": "close a follow-up of",
}
_MAY = {
    "abort": "abort",
    "pause": "pause",
    "resume": "resume",
    "promote": "promote",
    "go": "decide go/no-go on",
    "followup": "add follow-ups to incidents of",
    "followup-close": "close follow-ups of incidents of",
}
# Both follow-up commands are given by the catalog's `approvers.actions.followup` groups.
_CATALOG_ACTION: dict[Action, OperatorAction] = {"followup-close": "followup"}


@dataclass(frozen=True)
class Signer:
    """What a command's signature proved: the signer's groups, or why it proves nothing."""

    refusal: str | None
    groups: frozenset[str] = frozenset()

    @property
    def verified(self) -> bool:
        return self.refusal is None


UNCHECKED = Signer("the signature was not checked against the identities file")


def signer(identities: identity.Identities, command: OperatorCommand) -> Signer:
    refusal = identity.verify_command(identities, command)
    groups = identities.groups_for(command.actor, command.attested)
    return Signer(refusal, groups if refusal is None else frozenset())


def action(command: OperatorCommand) -> Action:
    match command:
        case ApprovalGiven():
            if command.kind == "go" or command.kind == "no-go":
                return "go"
            return command.kind
        case AbortRequested():
            return "abort"
        case PauseRequested():
            return "pause"
        case ResumeRequested():
            return "resume"
        case PromoteRequested():
            return "promote"
        case FollowupAdded():
            return "followup"
        case FollowupClosed():
            return "followup-close"
    raise TypeError(f"{type(command).__name__} is not an operator command the coordinator knows")


def describe(command: OperatorCommand) -> str:
    """The command as the audit log names it: `abort`, `promote --full`, an approval's kind."""
    if isinstance(command, ApprovalGiven):
        return command.kind
    if isinstance(command, PromoteRequested) and command.full:
        return "promote --full"
    if isinstance(command, FollowupAdded):
        return "follow-up"
    if isinstance(command, FollowupClosed):
        return f"close of follow-up {command.followup}"
    return action(command)


def refusal(command: OperatorCommand, saga: Saga, now: datetime, *, signer: Signer, replayed: bool) -> str | None:
    """Why the coordinator refuses `command` for `saga` at `now`; None if it acts on it. `signer` is what the
    signature proved, `replayed` whether the command's nonce is in the ledger already."""
    if command.signed_at is None or not command.signature or not command.keyid:
        return identity.NO_SIGNATURE
    if signer.refusal is not None:
        return signer.refusal
    if not command.nonce:
        return "no nonce: every signed command carries a new one, so that a copy of it is refused"
    ahead = command.signed_at - now
    if ahead > MAX_CLOCK_SKEW:
        return (
            f"signed {ahead.total_seconds():.0f} s in the future; clocks may differ by "
            f"{MAX_CLOCK_SKEW.total_seconds():.0f} s at most"
        )
    if replayed:
        return f"nonce {command.nonce} was used before: a replayed command"
    act = action(command)
    return expired(act, command.signed_at, now) or permission(saga, act, command.actor, signer.groups)


def expired(act: Action, signed_at: datetime, now: datetime) -> str | None:
    """Why a signature given at `signed_at` no longer carries `act` at `now`; None while it does."""
    if act in ("approval", "exception"):
        return None
    age = now - signed_at
    if age <= COMMAND_VALIDITY:
        return None
    return (
        f"signature expired: signed {age.total_seconds():.0f} s ago, a {act} is valid for "
        f"{COMMAND_VALIDITY.total_seconds():.0f} s"
    )


def permission(saga: Saga, act: Action, actor: str, groups: frozenset[str]) -> str | None:
    """Why `actor`, in `groups`, may not `act` on this release; None if they may. Which approvals and exceptions
    count is the gate policy's call; only the author's are refused here."""
    if actor == saga.candidate.get("author") and act not in AUTHOR_MAY:
        return f"the author of a change cannot {_AUTHOR_CANNOT[act]} it"
    if act == "approval" or act == "exception":
        return None
    allowed = allowed_groups(saga, act)
    if groups & allowed:
        return None
    named = " or ".join(sorted(allowed)) or "no"
    return f"not in the {named} group that may {_MAY[act]} {saga.service} releases"


def allowed_groups(saga: Saga, act: OperatorAction | Action) -> frozenset[str]:
    """The catalog's groups for `act` as the release started with them; a release started before the catalog
    named them (or before the action existed) gets the defaults for its approver group."""
    group = saga.config.approver_group if saga.config is not None else "approvers"
    named: OperatorAction = _CATALOG_ACTION.get(act, act)  # type: ignore[arg-type]
    operators = saga.operators
    if operators is None or getattr(operators, named) is None:
        operators = Approvers(group=group).actions
    return operators.groups(named)
