"""Operator commands given through the API: built for the person the login proved, signed by the API's key with
the login attested (issuer, subject, the token's groups) and published on release.control. The coordinator checks
the attester's signature, the groups and the author once more, and records the command or its refusal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import (
    AbortRequested,
    ApprovalGiven,
    Attestation,
    CandidateSubmitted,
    FollowupAdded,
    FollowupClosed,
    OperatorCommand,
    PauseRequested,
    PromoteRequested,
    ResumeRequested,
)
from releasegate_platform import identity
from services.api.access import Action, Person

SOURCE = "releasegate/api"
Publish = Callable[[str, Envelope], Awaitable[None]]


def command(action: Action, release_id: str, actor: str, reason: str) -> OperatorCommand:
    match action:
        case "approve":
            return ApprovalGiven(release_id=release_id, actor=actor, reason=reason, kind="approval")
        case "exception" | "go" | "no-go":
            return ApprovalGiven(release_id=release_id, actor=actor, reason=reason, kind=action)
        case "abort":
            return AbortRequested(release_id=release_id, actor=actor, reason=reason)
        case "pause":
            return PauseRequested(release_id=release_id, actor=actor, reason=reason)
        case "resume":
            return ResumeRequested(release_id=release_id, actor=actor, reason=reason)
        case "promote":
            return PromoteRequested(release_id=release_id, actor=actor, reason=reason, full=False)
        case "promote-full":
            return PromoteRequested(release_id=release_id, actor=actor, reason=reason, full=True)
    raise ValueError(f"unknown action {action!r}")


class Commands:
    def __init__(self, key: Path, issuer: str, publish: Publish) -> None:
        self._key, self._issuer, self._publish = key, issuer, publish

    async def give(self, action: Action, release_id: str, person: Person, reason: str) -> str:
        """Publish `action` on `release_id` for `person`; the CloudEvent id (acknowledged by the broker)."""
        attestation = Attestation(
            by=identity.ATTESTED_BY_API,
            issuer=self._issuer,
            subject=person.subject[:256],
            groups=sorted(person.groups)[:64],
        )
        signed = identity.attest_command(self._key, command(action, release_id, person.username, reason), attestation)
        envelope = Envelope.new(signed, SOURCE, release_id)
        await self._publish(topics.CONTROL, envelope)
        return envelope.id

    async def followup(self, command: FollowupAdded | FollowupClosed, person: Person) -> str:
        """Publish an incident follow-up command for `person`, attested as `give` does."""
        attestation = Attestation(
            by=identity.ATTESTED_BY_API,
            issuer=self._issuer,
            subject=person.subject[:256],
            groups=sorted(person.groups)[:64],
        )
        signed = identity.attest_command(self._key, command, attestation)
        envelope = Envelope.new(signed, SOURCE, command.release_id)
        await self._publish(topics.CONTROL, envelope)
        return envelope.id

    async def submit(self, candidate: CandidateSubmitted) -> str:
        envelope = Envelope.new(candidate, SOURCE, candidate.release_id)
        await self._publish(topics.CANDIDATES, envelope)
        return envelope.id
