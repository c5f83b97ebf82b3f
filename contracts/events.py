"""Event and command models of the release saga; each carries its CloudEvents type with its version."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from contracts.names import (
    COMMIT,
    CURRENCY,
    KEY_ID,
    LABEL,
    MAX_DEADLETTER_HEADERS,
    MAX_DEADLETTER_VALUE,
    MAX_HEADER_NAME,
    MAX_ITEMS,
    MAX_LABEL,
    MAX_NAME,
    MAX_NAMES,
    MAX_OPAQUE_ID,
    MAX_REASON,
    MAX_RELEASE_ID,
    MAX_STEP_ID,
    MAX_TEXT,
    MAX_URI,
    NAME,
    NAME_OR_ALL,
    NONCE,
    OPAQUE_ID,
    RELEASE_ID,
    SHA256_DIGEST,
    SIGNATURE,
    STEP_ID,
)

# Every identifier has a shape and a length (contracts/names.py says why); free text and lists have a length.
# Dicts of any content (attestations, evidence) are bounded by the record size limit of `decode`.
Name = Annotated[str, Field(pattern=NAME, max_length=MAX_NAME)]
NameOrAll = Annotated[str, Field(pattern=NAME_OR_ALL, max_length=MAX_NAME)]
ReleaseId = Annotated[str, Field(pattern=RELEASE_ID, max_length=MAX_RELEASE_ID)]
StepId = Annotated[str, Field(pattern=STEP_ID, max_length=MAX_STEP_ID)]
Digest = Annotated[str, Field(pattern=SHA256_DIGEST, max_length=71)]
OpaqueId = Annotated[str, Field(pattern=OPAQUE_ID, max_length=MAX_OPAQUE_ID)]
Signature = Annotated[str, Field(pattern=SIGNATURE, max_length=128)]
Label = Annotated[str, Field(pattern=LABEL, max_length=MAX_LABEL)]
Reason = Annotated[str, Field(max_length=MAX_REASON)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Names = Annotated[list[Name], Field(max_length=MAX_NAMES)]
Record = dict[Annotated[str, Field(max_length=MAX_LABEL)], Any]


class Contract(BaseModel):
    """Base of every event payload: strict about unknown fields so drift is caught, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    event_type: ClassVar[str]


class ReleaseEvent(Contract):
    release_id: ReleaseId = Field(description="Release id; also the CloudEvents subject and the Kafka key.")


# --- candidate (input from upstream CI) -------------------------------------------------------------------


class Artifact(Contract):
    digest: Digest = Field(description="Immutable artifact reference, `sha256:<64 hex>`. Tags are refused.")
    uri: str = Field(
        pattern=r"^[^\s\x00-\x1f\x7f]+$",
        max_length=MAX_URI,
        description="Where the artifact lives, e.g. `store://sha256/<hex>`.",
    )


class SourceRef(Contract):
    repository: Label = Field(description="Source repository the artifact was built from.")
    ref: Label = Field(description="Git ref, e.g. `refs/heads/main`.")
    commit: str = Field(pattern=COMMIT, max_length=64, description="Commit sha the artifact was built from.")


class TestReport(Contract):
    passed: int = Field(ge=0, description="Number of tests that passed in upstream CI.")
    failed: int = Field(ge=0, description="Number of tests that failed in upstream CI.")
    suite: Label = Field(default="ci", description="Name of the test suite.")


class VulnerabilitySummary(Contract):
    """Composition and vulnerability scan results that travel with the candidate (CycloneDX-style summary)."""

    format: Label = Field(default="cyclonedx-1.5", description="Format of the scan the summary was made from.")
    tool: Label = Field(description="Scanner that produced it.")
    components: int = Field(ge=0, description="Number of components in the artifact.")
    critical: int = Field(default=0, ge=0)
    high: int = Field(default=0, ge=0)
    medium: int = Field(default=0, ge=0)
    low: int = Field(default=0, ge=0)
    findings: list[dict[Label, Reason]] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Individual findings: `id`, `severity`, `component`."
    )


class CandidateSubmitted(ReleaseEvent):
    """A release candidate published by upstream CI; starts one release saga."""

    event_type: ClassVar[str] = "dev.releasegate.candidate.submitted.v1"
    service: Name = Field(description="Catalog name of the deployable service.")
    version: Name = Field(
        description="Version label of the candidate, e.g. `v2`; a name, as it becomes part of "
        "HAProxy server names and file paths."
    )
    artifact: Artifact
    source: SourceRef
    tests: TestReport
    author: Label = Field(description="Author of the change, e.g. `dev@shop` (never allowed to approve it).")
    changes: Text = Field(default="", description="Free-text summary of the change.")
    submitted_by: Name = Field(default="ci", description="Identity that submitted the candidate.")
    attestation: dict[str, Any] | None = Field(
        default=None,
        description="DSSE envelope of an in-toto Statement v1 with a SLSA provenance v1 predicate, "
        "signed by the builder; its subject digest must be the artifact's.",
    )
    vulnerabilities: VulnerabilitySummary | None = Field(
        default=None, description="Composition and vulnerability summary; policy sets the allowed severity per tier."
    )


# --- commands and results between coordinator and workers -------------------------------------------------


class CheckResult(Contract):
    name: Label = Field(description="Name of the check.")
    passed: bool
    reason: Reason = Field(description="Why the check passed or failed, in words an operator understands.")
    evidence: dict[str, Any] = Field(default_factory=dict, description="Figures the check used.")


class StepGrant(Contract):
    """The coordinator's signature over one deploy or compensation command: the deployer and the rollback service
    act only on a command whose grant verifies against the coordinator's public key, once, before it expires."""

    grant_id: str = Field(
        pattern=r"^[0-9a-f]{32}$",
        description="Unique id of this grant (a nonce, 32 hex): a "
        "grant authorizes one command, and a consumer accepts it from one CloudEvent only.",
    )
    issued_at: datetime = Field(
        description="When the coordinator signed the grant (UTC); a grant issued more "
        "than 60 s in the consumer's future is refused."
    )
    expires_at: datetime = Field(
        description="After this the grant is refused even if its step was never done: "
        "issue time + the step's timeout (×3 for slow compensations) + a margin."
    )
    keyid: str = Field(pattern=KEY_ID, description="Id of the coordinator's ed25519 public key.")
    signature: str = Field(
        pattern=SIGNATURE,
        description="ed25519 signature (hex) over the canonical "
        "payload: the command's bound fields plus grant_id, issued_at, expires_at and keyid.",
    )


class StepCommand(ReleaseEvent):
    step_id: StepId = Field(description="Saga step this command belongs to; results echo it.")
    service: Name
    version: Name
    digest: Digest


class Attestation(Contract):
    """Who a person is, as a releasegate service proved it by another means than the person's own key: the API
    validated the person's OIDC login and signs the command with its key on their behalf. Signed with the command,
    so the groups cannot be changed in transit; the coordinator and the gatekeeper trust it only from an attester
    whose public key they hold."""

    by: Name = Field(description="The attesting service (`api`), whose key signed the command.")
    issuer: str = Field(
        pattern=r"^https?://[^\s\x00-\x1f\x7f]+$",
        max_length=MAX_URI,
        description="The OIDC issuer that authenticated the person.",
    )
    subject: Label = Field(description="The person's `sub` at that issuer.")
    groups: list[Name] = Field(max_length=MAX_NAMES, description="The person's groups as the token stated them.")


class SignedApproval(Contract):
    """An approval as given by a person, with the signature that proves who gave it."""

    actor: Name = Field(description="Identity name of the approver (a key in the identities file).")
    kind: Literal["approval", "exception", "go", "no-go"] = Field(
        default="approval",
        description="`approval` of a risky change, `exception` to a freeze window, `go`/`no-go` at a hold point.",
    )
    reason: Reason
    signed_at: datetime = Field(description="When the approver signed; approvals expire after the policy's time.")
    nonce: str | None = Field(default=None, pattern=NONCE, description="The approval's nonce, part of what is signed.")
    keyid: str | None = Field(default=None, pattern=KEY_ID, description="Id of the approver's public key.")
    signature: Signature | None = Field(default=None, description="ed25519 signature (hex) over the canonical payload.")
    attested: Attestation | None = Field(
        default=None, description="Set when an attester (the API) signed for the approver after an OIDC login."
    )


class StagingVerification(Contract):
    """The coordinator's fact that this release's artifact passed verification in staging."""

    release_id: ReleaseId = Field(description="Release whose staging verification passed.")
    digest: Digest = Field(description="Digest of the artifact that was verified in staging.")
    step_id: StepId = Field(description="Saga step whose verdicts passed, e.g. `verify-staging`.")
    verified_at: datetime = Field(description="When the coordinator recorded the passing verdicts.")


FollowupKind = Literal["verifier", "policy", "runbook", "test"]
FollowupSeverity = Literal["low", "medium", "high"]
FOLLOWUP_TITLE_MAX = 200
FOLLOWUPS_MAX = 100
FollowupTitle = Annotated[str, Field(min_length=3, max_length=FOLLOWUP_TITLE_MAX, pattern=LABEL)]
FollowupNumber = Annotated[int, Field(ge=1, le=FOLLOWUPS_MAX)]


class OpenFollowup(Contract):
    """An incident follow-up not closed yet, as the coordinator tells the production gate about it."""

    release_id: ReleaseId = Field(description="The release whose incident it belongs to (the incident's id).")
    followup: FollowupNumber = Field(description="Its number within the incident (1, 2, ...).")
    kind: FollowupKind
    severity: FollowupSeverity
    owner: Name = Field(description="Identity or identities group that owns it.")
    title: FollowupTitle


class GateCheckRequested(StepCommand):
    """Command to the gatekeeper: evaluate the promotion gates for one environment."""

    event_type: ClassVar[str] = "dev.releasegate.gate.requested.v1"
    environment: Name
    tests: TestReport
    candidate: CandidateSubmitted | None = Field(
        default=None, description="The candidate as submitted: attestation, vulnerabilities, author, source."
    )
    approvals: list[SignedApproval] = Field(
        default_factory=list, max_length=MAX_NAMES, description="Approvals given to this release so far."
    )
    staging_verified: StagingVerification | None = Field(
        default=None,
        description="Production gate: the staging verification this release passed, from the coordinator's saga "
        "(only the coordinator may write gate commands, deploy/kafka/acls.yaml); none if staging was not verified.",
    )
    open_followups: list[OpenFollowup] | None = Field(
        default=None,
        max_length=MAX_ITEMS,
        description="Production gate: the service's incident follow-ups still open, from the coordinator's incident "
        "records (the catalog's `incidents.block_production_on_open` says which severities block); none: not told.",
    )


class GateCheckFinished(ReleaseEvent):
    event_type: ClassVar[str] = "dev.releasegate.gate.finished.v1"
    step_id: StepId
    environment: Name
    passed: bool = Field(description="True only if every check passed.")
    checks: list[CheckResult] = Field(max_length=MAX_ITEMS)
    decision: Literal["pass", "wait", "block"] | None = Field(
        default=None, description="`wait`: nothing is wrong but approvals or a release window are missing."
    )
    risk: Name | None = Field(default=None, description="Risk class of the change: low, medium or high.")
    policy_version: Label | None = Field(default=None, description="Version and digest of the policy applied.")
    input_digest: Digest | None = Field(default=None, description="sha256 of the policy input, stored for audit.")
    warnings: list[Reason] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="`warn` results of the policy (recorded)."
    )
    waiting_for: list[Reason] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="What a `wait` decision waits for."
    )
    retry_at: datetime | None = Field(default=None, description="When a `wait` decision is worth re-evaluating.")
    requires: list[StepId] = Field(
        default_factory=list,
        max_length=MAX_NAMES,
        description="Saga steps the policy requires for this change, e.g. `dr-check` when migrations are present.",
    )
    migrations: list[Record] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="New schema migrations of the candidate, in order: "
        "`name`, `kind` (expand | contract), `rewrites_data`.",
    )


class DRCheckRequested(StepCommand):
    """Command to the dr-checker: prove recovery is possible within the tier's RPO."""

    event_type: ClassVar[str] = "dev.releasegate.dr.requested.v1"
    database: Name = Field(description="Database the service owns (a name, never a connection string).")
    rpo_seconds: float = Field(gt=0, description="Recovery point objective of the service's tier.")
    action: Literal["readiness", "backup-point"] = Field(
        default="readiness",
        description="`readiness`: prove recovery would work now (backup, drill, RTO, "
        "replica, runbooks); `backup-point`: take the pre-release backup right before production migrations.",
    )


class BackupPoint(Contract):
    """A backup the dr-checker took and recorded: everything a restore needs to find the file and prove it is the
    same one (the restoring service confines the path to its backup folder and checks the digest first)."""

    backup_id: int = Field(ge=1, description="Id of the backup in the dr-checker's backup catalog.")
    database: Name = Field(description="Database the backup is of.")
    path: str = Field(
        min_length=1, max_length=MAX_URI, description="Absolute path of the dump file, inside the backup folder."
    )
    sha256: Digest = Field(description="Digest (`sha256:<hex>`) of the dump file when it was taken.")
    bytes: int = Field(ge=0, description="Size of the dump file.")
    kind: Literal["scheduled", "backup-point"] = Field(
        description="`backup-point`: taken for one release right before its production migrations."
    )
    taken_at: datetime = Field(description="When pg_dump started: the dump holds everything committed before it.")
    release_id: ReleaseId | None = Field(default=None, description="`backup-point`: the release it protects.")


class DRCheckFinished(ReleaseEvent):
    event_type: ClassVar[str] = "dev.releasegate.dr.finished.v1"
    step_id: StepId
    ready: bool
    checks: list[CheckResult] = Field(max_length=MAX_ITEMS)
    backup_point: BackupPoint | None = Field(
        default=None,
        description="`backup-point` action that succeeded: the backup taken; a data restore of this release names "
        "it (`RollbackRequested.backup_point`).",
    )


class DeployAction(StrEnum):
    START = "start"
    SHIFT = "shift"
    ROUTE = "route"
    ROLL = "roll"
    RESTORE = "restore"
    FINALIZE = "finalize"
    MIGRATE = "migrate"


class DeployRequested(StepCommand):
    """Command to the deployer: start the candidate beside stable, shift weight, or make it the new stable."""

    event_type: ClassVar[str] = "dev.releasegate.deploy.requested.v1"
    environment: Name
    action: DeployAction
    weight: int = Field(ge=0, le=100, description="Percent of the environment's traffic for the candidate.")
    instances: int = Field(default=1, ge=1, le=3, description="Instances of the candidate to run.")
    tenants: Names | None = Field(default=None, description="`route`: tenants sent to the candidate.")
    batch: int | None = Field(
        default=None,
        ge=1,
        description="`roll`: instances of the candidate after this "
        "batch are min(batch × batch_size, instances); `roll`/`restore`: batch size.",
    )
    batch_size: int = Field(default=1, ge=1, description="`roll`/`restore`: instances replaced per batch.")
    attestation: dict[str, Any] | None = Field(
        default=None,
        description="The candidate's signed provenance; the deployer re-verifies it and the digest "
        "before it starts anything.",
    )
    grant: StepGrant | None = Field(
        default=None, description="The coordinator's step grant; the deployer refuses a command without a valid one."
    )


class ObservedState(Contract):
    weights: dict[Name, int] = Field(
        max_length=MAX_NAMES, description="Percent of traffic per version as read back from HAProxy."
    )
    instances: list[Record] = Field(default_factory=list, max_length=MAX_NAMES, description="Instances seen serving.")
    stable_version: Name | None = Field(default=None, description="Version the environment falls back to.")
    tenants_on_candidate: Names = Field(default_factory=list, description="Tenants routed to the candidate.")


class DeployFinished(ReleaseEvent):
    event_type: ClassVar[str] = "dev.releasegate.deploy.finished.v1"
    step_id: StepId
    environment: Name
    succeeded: bool
    reason: Reason
    observed: ObservedState | None = None


class KpiThreshold(Contract):
    min: float | None = Field(default=None, description="Lowest acceptable canary value.")
    max: float | None = Field(default=None, description="Highest acceptable canary value.")
    max_drop: float | None = Field(
        default=None, description="Largest acceptable drop of the canary below the stable baseline (absolute)."
    )
    max_increase_ratio: float | None = Field(
        default=None, description="Largest acceptable canary/baseline ratio, for latencies."
    )
    tolerance: float | None = Field(
        default=None,
        description="Effect size tolerated by the sequential canary-vs-baseline test: absolute drop "
        "for rates, excess of P(canary slower) over 0.5 for latencies.",
    )
    detect: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Rates only: the smallest drop (absolute, 0.02 = 2 points) the step must be able to catch. The "
        "rate is then judged by a sequential test tuned to it (stratified by tenant), and a step with too "
        "little traffic to tell such a drop from noise ends inconclusive with the numbers, never a pass.",
    )
    power: float | None = Field(
        default=None,
        ge=0.5,
        lt=1,
        description="With `detect`: the probability of catching a drop of that size (default 0.9).",
    )

    @model_serializer(mode="wrap")
    def _omit_unset_detection(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`detect` and `power` came later: left out when unset, a threshold serialises as before, so a verifier
        or a recorded saga of the earlier contract reads it unchanged."""
        out: dict[str, Any] = handler(self)
        for key in ("detect", "power"):
            if out.get(key) is None:
                out.pop(key, None)
        return out

    @model_validator(mode="after")
    def _power_needs_detect(self) -> KpiThreshold:
        if self.power is not None and self.detect is None:
            raise ValueError("power is the probability of catching `detect`: give detect too")
        return self


class SyntheticJourneys(Contract):
    journey: Name = Field(
        description="Name of an entry of the catalog's journey allow-list; the verifier runs "
        "only journeys listed there, never a module path taken from a command."
    )
    tenants: Names = Field(min_length=1, description="Tenants to run journeys for.")
    profiles: Names = Field(min_length=1, description="Customer profiles cycled through, e.g. card brands.")
    journeys_per_tenant: int = Field(default=6, ge=1, le=50)
    min_success_rate: float = Field(default=0.8, ge=0, le=1, description="Per tenant.")


class PromQuery(Contract):
    query: Text = Field(description="PromQL template; $version, $environment and $window (seconds) are filled in.")
    min: float | None = None
    max: float | None = None


SYNTHETIC_TIMEOUT_SECONDS = 60.0
"""How long the coordinator waits for a preview's verdict (plus the catalog's grace). Scripted journeys can run
at any moment, so a verifier takes a synthetic request up to this long after it was sent, whatever its window."""


class VerificationRequested(ReleaseEvent):
    """Command to the verifier: judge the candidate's KPIs over a window against stable and thresholds."""

    event_type: ClassVar[str] = "dev.releasegate.verification.requested.v1"
    step_id: StepId
    service: Name
    environment: Name
    candidate_version: Name
    stable_version: Name | None
    window_seconds: float = Field(gt=0)
    min_samples: int = Field(ge=1, description="Fewer candidate samples than this at window end: inconclusive.")
    false_rollback_bound: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Bound on the probability of failing a healthy candidate across all looks (sequential test α).",
    )
    thresholds: dict[Name, KpiThreshold] = Field(
        max_length=MAX_NAMES, description="KPI name to its thresholds (from the catalog)."
    )
    synthetic: SyntheticJourneys | None = Field(
        default=None,
        description="Run scripted journeys directly against the candidate's instances instead of "
        "judging customer traffic (before it receives any).",
    )
    tenants: Names | None = Field(default=None, description="Judge only these tenants' candidate traffic.")
    prometheus: dict[Name, PromQuery] | None = Field(
        default=None, max_length=MAX_NAMES, description="KPIs read from Prometheus."
    )
    journeys: SyntheticJourneys | None = Field(
        default=None,
        description="Scripted journeys run against the candidate as this step's window opens, "
        "judged together with the customer-traffic KPIs.",
    )


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


NEEDS_SECONDS_MAX = 10_000_000.0
"""`KpiResult.needs_seconds` is at most this (about 116 days): beyond it, "more than that" is all that matters."""


class KpiResult(Contract):
    name: Label = Field(description="KPI name, or what a provider measured, e.g. `journey_success[acme]`.")
    candidate: float | None = Field(description="Candidate value over the window (None: no data).")
    baseline: float | None = Field(description="Stable value over the same window (None: no data).")
    candidate_samples: int
    baseline_samples: int
    verdict: Verdict
    rule: Reason = Field(description="The decision rule that was applied, e.g. `candidate >= 0.9`.")
    test: Label | None = Field(default=None, description="Statistical test used against the baseline, if any.")
    statistic: float | None = Field(default=None, description="The test's statistic (mixture likelihood ratio).")
    needs_seconds: float | None = Field(
        default=None,
        ge=0,
        le=NEEDS_SECONDS_MAX,
        allow_inf_nan=False,
        description="Undecided for want of evidence: how long a window this KPI needs in all, at the traffic seen, "
        "to decide on the smallest regression the catalog says it must catch (`detect`).",
    )

    @model_serializer(mode="wrap")
    def _omit_unset_need(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Left out when unset, so a result serialises as it did before the field existed."""
        out: dict[str, Any] = handler(self)
        if out.get("needs_seconds") is None:
            out.pop("needs_seconds", None)
        return out


class VerificationFinished(ReleaseEvent):
    event_type: ClassVar[str] = "dev.releasegate.verification.finished.v1"
    step_id: StepId
    environment: Name
    verdict: Verdict
    reason: Reason
    kpis: list[KpiResult] = Field(max_length=MAX_ITEMS)
    window_start: datetime
    window_end: datetime
    verifier: Name = Field(default="business-kpis")


class RollbackRequested(ReleaseEvent):
    """Command to the rollback service: run one named compensation."""

    event_type: ClassVar[str] = "dev.releasegate.rollback.requested.v1"
    step_id: StepId = Field(description="Id of the compensation, e.g. `compensate:production`.")
    compensation: Literal["restore_traffic", "restore_data"] = Field(
        description="`restore_traffic`: traffic back to stable; `restore_data`: stop writes, restore the "
        "pre-release backup point, replay orders since, check integrity, then traffic back to stable."
    )
    service: Name
    environment: Name
    candidate_version: Name
    backup_id: int | None = Field(default=None, description="`restore_data`: the backup point to restore.")
    since: datetime | None = Field(default=None, description="`restore_data`: replay orders placed from then on.")
    backup_point: BackupPoint | None = Field(
        default=None,
        description="`restore_data`: the backup point as the dr-checker reported it (`DRCheckFinished."
        "backup_point`); without it a data restore is refused.",
    )
    grant: StepGrant | None = Field(
        default=None,
        description="The coordinator's step grant; the rollback service refuses a command without a valid one.",
    )


class RollbackFinished(ReleaseEvent):
    event_type: ClassVar[str] = "dev.releasegate.rollback.finished.v1"
    step_id: StepId
    environment: Name
    succeeded: bool
    reason: Reason
    observed: ObservedState | None = None
    evidence: dict[str, Any] = Field(
        default_factory=dict,
        description="`restore_data`: the incident report "
        "(orders replayed, orders that could not be, integrity checks).",
    )


# --- operator control ---------------------------------------------------------------------------------------


class OperatorCommand(ReleaseEvent):
    """A person's command on a release, signed with their key; the coordinator refuses it unsigned, replayed,
    expired or from someone the catalog does not allow to give it."""

    actor: Name = Field(description="Identity of the operator (a name in the identities file).")
    reason: Reason = Field(description="Why, in the operator's words; recorded in the audit log.")
    signed_at: datetime | None = Field(
        default=None,
        description="When the operator signed. Refused if more than 60 s in the future; abort, "
        "pause, resume, promote and go/no-go are refused 10 minutes after it (approvals expire by policy).",
    )
    nonce: str | None = Field(
        default=None,
        pattern=NONCE,
        description="Random hex, new for every signed command and part of what is "
        "signed; a nonce the coordinator has seen before is refused as a replay.",
    )
    keyid: str | None = Field(default=None, pattern=KEY_ID, description="Id of the operator's public key.")
    signature: Signature | None = Field(
        default=None,
        description="ed25519 signature (hex) over the canonical operator-command payload: the event "
        "type, release id, actor, reason, nonce, signed_at and the command's own fields.",
    )
    attested: Attestation | None = Field(
        default=None,
        description="Set when the command was given through the API after an OIDC login: the API signed it with its "
        "key, and the person's groups are the token's (part of what is signed).",
    )


class ApprovalGiven(OperatorCommand):
    """An operator approves a release (or a freeze exception, or a go/no-go), signed with the person's key."""

    event_type: ClassVar[str] = "dev.releasegate.approval.given.v1"
    kind: Literal["approval", "exception", "go", "no-go"] = Field(default="approval")

    def signed(self) -> SignedApproval:
        return SignedApproval(
            actor=self.actor,
            kind=self.kind,
            reason=self.reason,
            signed_at=self.signed_at or datetime.fromtimestamp(0).astimezone(),
            nonce=self.nonce,
            keyid=self.keyid,
            signature=self.signature,
            attested=self.attested,
        )


class AbortRequested(OperatorCommand):
    """An operator stops a release; completed steps are compensated."""

    event_type: ClassVar[str] = "dev.releasegate.abort.requested.v1"


class PauseRequested(OperatorCommand):
    """An operator holds a release where it is; the step in flight is repeated on resume."""

    event_type: ClassVar[str] = "dev.releasegate.pause.requested.v1"


class ResumeRequested(OperatorCommand):
    """An operator continues a paused release (its current step is issued again)."""

    event_type: ClassVar[str] = "dev.releasegate.resume.requested.v1"


class PromoteRequested(OperatorCommand):
    """An operator sends all production traffic to the candidate now, skipping the remaining canary steps."""

    event_type: ClassVar[str] = "dev.releasegate.promote.requested.v1"
    full: bool = Field(default=True, description="Skip every remaining canary step and its verification.")


class FollowupAdded(OperatorCommand):
    """An operator adds a follow-up action to the incident of a rolled-back release (its `release_id`): what must
    change so the failure is caught earlier or cannot recur (a verifier, a policy rule, a runbook, a test)."""

    event_type: ClassVar[str] = "dev.releasegate.incident.followup-added.v1"
    kind: FollowupKind = Field(description="verifier | policy | runbook | test")
    severity: FollowupSeverity = Field(
        description="low | medium | high; the catalog may block production releases on open ones of some severities"
    )
    owner: Name = Field(description="Who owns it: a person or a group of the identities file.")
    title: FollowupTitle = Field(description="What is to be done, in one line.")


class FollowupClosed(OperatorCommand):
    """An operator closes a follow-up of the incident of `release_id` (`reason`: what was done)."""

    event_type: ClassVar[str] = "dev.releasegate.incident.followup-closed.v1"
    followup: FollowupNumber = Field(description="The follow-up's number within the incident.")


# --- public outputs -----------------------------------------------------------------------------------------


class ReleaseState(StrEnum):
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    WAITING_WINDOW = "waiting_window"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        ReleaseState.PROMOTED,
        ReleaseState.REJECTED,
        ReleaseState.ROLLED_BACK,
        ReleaseState.ROLLBACK_FAILED,
        ReleaseState.ABORTED,
    }
)


class ReleaseStatusChanged(ReleaseEvent):
    """Every state or step change of a release, for ops dashboards and `releasegate watch`."""

    event_type: ClassVar[str] = "dev.releasegate.release.status-changed.v1"
    service: Name
    version: Name
    state: ReleaseState
    step: StepId | None = Field(description="Saga step the release is at.")
    actor: Name
    reason: Text = Field(description="What happened, quoting the results and commands that made it happen.")
    evidence: dict[str, Any] = Field(default_factory=dict)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertRaised(ReleaseEvent):
    event_type: ClassVar[str] = "dev.releasegate.alert.raised.v1"
    service: Name
    severity: Severity
    title: Label
    detail: Text


class VerifierHeartbeat(Contract):
    """A verifier announces itself and that it is alive; the registry keeps the last heartbeat per instance."""

    event_type: ClassVar[str] = "dev.releasegate.verifier.heartbeat.v1"
    name: Name = Field(description="Verifier name; verdicts carry it in `VerificationFinished.verifier`.")
    version: Name = Field(description="Version of the verifier's code.")
    instance: Name = Field(description="Process instance id (several instances may serve one verifier).")
    services: list[NameOrAll] = Field(max_length=MAX_NAMES, description="Catalog services it verifies; `*` for all.")
    environments: list[NameOrAll] = Field(max_length=MAX_NAMES, description="Environments it verifies.")
    kpis: Names = Field(default_factory=list, description="Measurements it reports.")
    interval_seconds: float = Field(gt=0, description="Heartbeat period; silent for 3 periods = not alive.")
    sent_at: datetime


class DeadLetter(Contract):
    """A record no consumer could process, with the reason; nothing is silently dropped."""

    event_type: ClassVar[str] = "dev.releasegate.deadletter.v1"
    consumer: Name = Field(description="Consumer group that refused the record.")
    source_topic: Name
    partition: int
    offset: int
    key: str | None = Field(max_length=MAX_LABEL, description="The record's key as text, shortened to fit.")
    reason: Reason
    error_type: Label
    headers: dict[Annotated[str, Field(max_length=MAX_HEADER_NAME)], Reason] = Field(
        max_length=MAX_DEADLETTER_HEADERS, description="The record's headers as text, shortened to fit."
    )
    value: str = Field(
        max_length=MAX_DEADLETTER_VALUE,
        description="Original value as text (base64 if not UTF-8), truncated to 64 KiB.",
    )
    original_value_bytes: int | None = Field(default=None, ge=0, description="Size of the original value.")
    original_value_digest: Digest | None = Field(
        default=None, description="sha256 of the whole original value: identifies the record when its value was cut."
    )
    original_header_count: int | None = Field(default=None, ge=0, description="Headers the original record had.")
    original_headers_bytes: int | None = Field(default=None, ge=0, description="Bytes of the original headers.")
    truncated: bool = Field(default=False, description="True if the key, headers, value or reason were cut to fit.")


# --- read models published by their owner -------------------------------------------------------------------


class ServingVersion(Contract):
    """One version serving in an environment, as the deployer runs it."""

    version: Name
    digest: Digest
    release_id: ReleaseId | None = Field(default=None, description="Release that started it; none for bootstrap.")
    weight: int = Field(ge=0, le=100, description="Percent of the environment's traffic it gets.")
    endpoints: list[Annotated[str, Field(max_length=MAX_URI, pattern=r"^https?://[^\s]+$")]] = Field(
        max_length=MAX_ITEMS, description="Base URLs of its serving instances, for synthetic journeys."
    )


class EnvironmentState(Contract):
    """What runs in one environment of one service: the deployer's read model, published (compacted, keyed by
    service and environment) after every change it makes, so no other service reads the deployer's tables."""

    event_type: ClassVar[str] = "dev.releasegate.environment.state.v1"
    service: Name
    environment: Name
    sequence: int = Field(
        ge=1,
        lt=2**63,
        description="Grows with every state the deployer publishes for this service and environment; a consumer "
        "keeps the state with the highest sequence (an older state never overwrites a newer one).",
    )
    stable_version: Name | None = Field(description="The environment's stable version; none before the first.")
    stable_digest: Digest | None = Field(description="Artifact digest of the stable version.")
    serving: list[ServingVersion] = Field(max_length=MAX_NAMES, description="Versions with serving instances.")
    observed_at: datetime = Field(description="When the deployer read this state.")


# --- business events of the sample shop ---------------------------------------------------------------------


class ShopEvent(Contract):
    model_config = ConfigDict(extra="ignore", frozen=True)
    version: Name
    environment: Name
    tenant: Name
    instance: Name
    checkout_id: OpaqueId
    order_id: OpaqueId | None = None
    amount_cents: int
    currency: str = Field(pattern=CURRENCY, max_length=3)
    reason: Reason | None = None
    latency_ms: float | None = None
    tax_cents: int | None = Field(default=None, description="Tax included in the order (order.placed).")
    region: OpaqueId | None = Field(default=None, description="Tax region of the tenant (order.placed).")
    items: list[Record] | None = Field(
        default=None, max_length=MAX_ITEMS, description="Basket lines `sku`, `qty` (order.placed)."
    )
    customer: Label | None = Field(default=None, description="Customer key within the tenant, for replay.")
    payment_ref: OpaqueId | None = Field(default=None, description="Authorization reference (never card data).")
    placed_at: datetime | None = Field(default=None, description="When the order row was committed.")


def _shop(name: str, type_: str) -> type[ShopEvent]:
    return type(name, (ShopEvent,), {"event_type": type_, "__doc__": f"Shop business event `{type_}`."})


CheckoutAttempted = _shop("CheckoutAttempted", "shop.checkout.attempted.v1")
CheckoutSucceeded = _shop("CheckoutSucceeded", "shop.checkout.succeeded.v1")
CheckoutFailed = _shop("CheckoutFailed", "shop.checkout.failed.v1")
PaymentAuthorized = _shop("PaymentAuthorized", "shop.payment.authorized.v1")
PaymentDeclined = _shop("PaymentDeclined", "shop.payment.declined.v1")
OrderPlaced = _shop("OrderPlaced", "shop.order.placed.v1")
InventoryReserved = _shop("InventoryReserved", "shop.inventory.reserved.v1")
InventoryConfirmed = _shop("InventoryConfirmed", "shop.inventory.confirmed.v1")


EVENT_TYPES: dict[str, type[Contract]] = {
    m.event_type: m
    for m in (
        CandidateSubmitted,
        GateCheckRequested,
        GateCheckFinished,
        DRCheckRequested,
        DRCheckFinished,
        DeployRequested,
        DeployFinished,
        VerificationRequested,
        VerificationFinished,
        RollbackRequested,
        RollbackFinished,
        ApprovalGiven,
        AbortRequested,
        PauseRequested,
        ResumeRequested,
        PromoteRequested,
        FollowupAdded,
        FollowupClosed,
        ReleaseStatusChanged,
        AlertRaised,
        DeadLetter,
        VerifierHeartbeat,
        EnvironmentState,
        CheckoutAttempted,
        CheckoutSucceeded,
        CheckoutFailed,
        PaymentAuthorized,
        PaymentDeclined,
        OrderPlaced,
        InventoryReserved,
        InventoryConfirmed,
    )
}

__all__ = [name for name, obj in list(globals().items()) if isinstance(obj, type) and issubclass(obj, BaseModel)]
__all__ += [
    "ReleaseState",
    "Verdict",
    "Severity",
    "DeployAction",
    "TERMINAL_STATES",
    "SHA256_DIGEST",
    "KEY_ID",
    "NONCE",
]
