"""The coordinator's side of step grants: every deploy and compensation command leaves signed, valid for as long
as the saga waits for its step (plus a margin). Pure; `handlers._persist` applies it to each decision."""

from __future__ import annotations

from datetime import datetime, timedelta

from securesystemslib.signer import CryptoSigner

from contracts.events import Contract, DeployAction, DeployRequested, RollbackRequested
from releasegate_runtime import grants
from services.coordinator.model import STEP_TIMEOUTS

# How long a grant outlives its step's deadline: a command still unhandled after the coordinator gave up on its
# step must not act any more, but a slow relay or a consumer catching up should not cost the step.
MARGIN = timedelta(seconds=60)


def lifetime(command: grants.Command) -> timedelta:
    """The step's timeout, as its deadline in the saga (×3 for the slow compensations), plus the margin."""
    if isinstance(command, RollbackRequested):
        seconds = STEP_TIMEOUTS["rollback"] * (3 if command.compensation == "restore_data" else 1)
    elif command.action is DeployAction.RESTORE:
        seconds = STEP_TIMEOUTS["rollback"] * 3
    else:
        seconds = STEP_TIMEOUTS["deploy"]
    return timedelta(seconds=seconds) + MARGIN


def signed(commands: list[tuple[str, Contract]], signer: CryptoSigner, now: datetime) -> list[tuple[str, Contract]]:
    """A decision's commands as sent: each deploy and compensation command with a fresh step grant."""
    return [
        (
            topic,
            grants.with_grant(signer, command, issued_at=now, lifetime=lifetime(command))
            if isinstance(command, DeployRequested | RollbackRequested)
            else command,
        )
        for topic, command in commands
    ]
