"""Who may send what to the coordinator. Kafka does not tell a consumer who produced a record, so every result
arrives on its producer's own topic (`release.results.<principal>`), writable by that principal alone
(deploy/kafka/acls.yaml); here the coordinator checks that the event is one that principal may send."""

from __future__ import annotations

from datetime import datetime, timedelta

from contracts.events import (
    Contract,
    DeployFinished,
    DRCheckFinished,
    GateCheckFinished,
    RollbackFinished,
    VerificationFinished,
    VerifierHeartbeat,
)
from releasegate_runtime.bus import Principal

# Results of the worker services: only the named principal may report them.
WORKERS: dict[type, str] = {
    GateCheckFinished: "gatekeeper",
    DRCheckFinished: "dr-checker",
    DeployFinished: "deployer",
    RollbackFinished: "rollback",
}
RESULT_TYPES = (*WORKERS, VerificationFinished, VerifierHeartbeat)
# A heartbeat's clock may run a little ahead; one dated further in the future would keep a verifier "alive".
CLOCK_SKEW = timedelta(seconds=60)


def refusal(sender: Principal, event: Contract, now: datetime) -> str | None:
    """None if `sender` may send `event`, else why not (recorded and dead-lettered by the caller; a name from the
    record is shortened, so a hostile one cannot blow up the audit log)."""
    match event:
        case VerificationFinished():
            if sender.verifier_name != event.verifier:
                return (
                    f"verdict naming verifier {_short(event.verifier)} sent by principal {sender.name!r}: only "
                    f"verifier-{_short(event.verifier, quoted=False)} may publish its verdicts"
                )
        case VerifierHeartbeat():
            if sender.verifier_name != event.name:
                return (
                    f"heartbeat of verifier {_short(event.name)} sent by principal {sender.name!r}: only "
                    f"verifier-{_short(event.name, quoted=False)} may announce it"
                )
            if event.sent_at > now + CLOCK_SKEW:
                return f"heartbeat dated {event.sent_at.isoformat()}, in the future (now {now.isoformat()})"
        case _:
            expected = WORKERS.get(type(event))
            if expected is None:
                return f"{type(event).__name__} is not a result"
            if sender.name != expected:
                return f"{type(event).__name__} sent by principal {sender.name!r}: only {expected} reports it"
    return None


def _short(name: str, *, quoted: bool = True, limit: int = 64) -> str:
    shown = name[:limit] + ("…" if len(name) > limit else "")
    return repr(shown) if quoted else shown.encode("unicode_escape").decode()
