"""The service catalog: one versioned YAML file per deployable service in `catalog/`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from contracts.events import KpiThreshold, PromQuery, SyntheticJourneys
from contracts.names import MAX_NAME, MAX_NAMES, MAX_TENANT, NAME, TENANT, check_name
from contracts.peak import PeakReadiness

# Packages whose modules the verifier may import journeys from, unless the Catalog is given others.
JOURNEY_PACKAGES = ("shop",)
PEAK_LOAD_VERIFIER = "peak-load"  # verifiers/peak_load: runs the load profile of `peak_readiness`
DETECTABLE_RATES = frozenset({"checkout_success_rate", "payment_authorization_rate"})  # the verifier's PROPORTIONS
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
# `package.module:function`: Python identifiers only, so nothing but a module path and an attribute.
JOURNEY_TARGET = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER}){{0,7}}:{_IDENTIFIER}")

Name = Annotated[str, Field(pattern=NAME, max_length=MAX_NAME)]
Names = Annotated[list[Name], Field(max_length=MAX_NAMES)]
# tenants must be nameable by a Host (`<tenant>.shop.test`): a tenant that cannot would silently get no traffic
Tenants = Annotated[list[Annotated[str, Field(pattern=TENANT, max_length=MAX_TENANT)]], Field(max_length=MAX_NAMES)]


def _journey_target(target: str) -> str:
    if JOURNEY_TARGET.fullmatch(target) is None:
        raise ValueError(f"journey target {target[:120]!r} must be `package.module:function`")
    return target


JourneyTarget = Annotated[str, AfterValidator(_journey_target)]


def _replayer_target(target: str) -> str:
    if JOURNEY_TARGET.fullmatch(target) is None:
        raise ValueError(f"dr.replayer {target[:120]!r} must be `package.module:Class`")
    return target


class CatalogError(Exception):
    """The catalog has no valid entry for the requested service."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Standby(_Model):
    host: str = Field(description="Host of the streaming replica; credentials are the primary's (RG_DATABASE_URL)")
    port: int = Field(gt=0, lt=65536)


class DRRequirement(_Model):
    required: bool = False
    database: Name | None = None
    rpo_seconds: float = Field(default=3600, gt=0, description="Most data the business accepts to lose")
    rto_seconds: float = Field(default=900, gt=0, description="Longest the business accepts to be down")
    drill_max_age_seconds: float = Field(
        default=7 * 86400, gt=0, description="A successful restore drill must be at most this old"
    )
    integrity_checks: dict[str, str] = Field(
        default_factory=dict,
        description="Name → SQL returning the number of violations (0 = holds), run on "
        "every restore drill and after every data restore",
    )
    standby: Standby | None = None
    runbooks: dict[str, str] = Field(
        default_factory=dict,
        description="Runbook name (restore, failover) → path "
        "in the repository or URL; tier-1 services need restore and failover",
    )
    hold_point: bool = Field(default=False, description="Pause before production for a go/no-go decision")
    replayer: Annotated[str, AfterValidator(_replayer_target)] | None = Field(
        default=None,
        description="`module:Class` re-applying the service's business events after a data restore "
        "(releasegate_platform.replay); only in the service's own package. None: no data restore",
    )


class Wave(_Model):
    name: Name
    tenants: Tenants = Field(min_length=1)


class Rollout(_Model):
    strategy: Literal["canary", "blue-green", "tenant-phased", "rolling"] = "canary"
    max_unavailable: int = Field(default=1, ge=1, description="rolling: instances replaced per batch")
    waves: list[Wave] = Field(default=[], description="tenant-phased: waves before everyone, in order")
    internal_tenants: Tenants = Field(
        default=[],
        description="canary: tenants (named by the Host "
        "`<tenant>.shop.test`) that get the candidate first, before any weight "
        "step; internal users with a signed canary cookie "
        "(`releasegate canary-cookie USER`) are routed there too",
    )
    instances: int = Field(default=1, ge=1, le=3)
    canary_steps: list[int] = Field(default=[10, 50, 100], min_length=1)
    keep_blue_warm_seconds: float = Field(default=30, ge=0, description="blue-green: old version kept warm")


class VerifierSet(_Model):
    required: list[str] = Field(default=[], description="Verdicts the release waits for; any fail fails the step")
    advisory: list[str] = Field(default=[], description="Verdicts recorded and shown, never blocking")


class Verification(_Model):
    required_verifiers: list[str] = ["business-kpis"]
    advisory_verifiers: list[str] = []
    by_environment: dict[str, VerifierSet] = Field(
        default_factory=dict, description="Per environment, replaces required/advisory_verifiers there"
    )
    staging_window_seconds: float = 10
    canary_window_seconds: float = 15
    min_samples: int = 20
    grace_seconds: float = 30
    on_inconclusive: Literal["pause", "rollback", "extend"] = "pause"
    false_rollback_bound: float = Field(default=0.05, gt=0, lt=1)
    max_window_seconds: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="With on_inconclusive: extend, the longest a window may be extended to when a KPI with `detect` "
        "says how long its evidence needs at the current traffic (without it, or without such a KPI, twice the "
        "window); evidence that needs longer pauses the release at once, with the numbers",
    )
    evidence_weight_max: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Canary only, with on_inconclusive: extend: the risk budget for evidence. When a step's "
        "evidence needs a longer window than max_window_seconds at its weight, the canary may be raised up to this "
        "weight (percent) to gather it within that window, and verified there; beyond it, the release pauses",
    )

    def verifiers(self, environment: str) -> VerifierSet:
        return self.by_environment.get(environment) or VerifierSet(
            required=self.required_verifiers, advisory=self.advisory_verifiers
        )


OperatorAction = Literal["abort", "pause", "resume", "promote", "go", "followup"]


class OperatorGroups(_Model):
    """Per operator command, the identities groups whose members may give it (one of them is enough). Left out:
    the default of `Approvers`."""

    abort: list[str] | None = Field(default=None, description="Default: the approver and the exception group")
    pause: list[str] | None = Field(default=None, description="Default: the approver and the exception group")
    resume: list[str] | None = Field(default=None, description="Default: the approver group")
    promote: list[str] | None = Field(default=None, description="`promote --full`. Default: the exception group")
    go: list[str] | None = Field(default=None, description="go and no-go at a hold point. Default: the approver group")
    followup: list[str] | None = Field(
        default=None,
        description="Add and close incident follow-ups (`releasegate followup`). Default: the approver and the "
        "exception group",
    )

    def groups(self, action: OperatorAction) -> frozenset[str]:
        return frozenset(getattr(self, action) or ())


class Approvers(_Model):
    group: str = Field(default="approvers", description="Identities group whose members approve risky changes")
    exception_group: str = Field(default="release-managers", description="Elevated group for freeze exceptions")
    actions: OperatorGroups = Field(
        default_factory=OperatorGroups,
        description="Who may abort, pause, resume, "
        "promote and decide go/no-go; the change's author never resumes, promotes or "
        "decides go/no-go, whatever the groups",
    )

    @model_validator(mode="after")
    def _default_action_groups(self) -> Approvers:
        defaults = {
            "abort": [self.group, self.exception_group],
            "pause": [self.group, self.exception_group],
            "resume": [self.group],
            "promote": [self.exception_group],
            "go": [self.group],
            "followup": [self.group, self.exception_group],
        }
        self.actions = self.actions.model_copy(
            update={a: groups for a, groups in defaults.items() if getattr(self.actions, a) is None}
        )
        return self


class Incidents(_Model):
    """What a rolled-back release's incident means for the service's next releases."""

    block_production_on_open: list[Literal["low", "medium", "high"]] = Field(
        default_factory=list,
        description="Severities of open incident follow-ups that block the service's production gate until they are "
        "closed (e.g. [high]); empty: follow-ups never block",
    )


class EdgeSpec(_Model):
    """The edge cache in front of one environment (deploy/varnish): the deployer bans the keys a release declares
    (bundle.json `edge.invalidates`) at each cut-over and reads prices through the edge once the candidate takes all
    traffic; the rollback service bans everything the service tagged."""

    environment: Name = Field(default="production", description="The environment the edge serves")
    host: str = Field(
        default="shop.test",
        pattern=r"^[a-z0-9.-]{1,253}$",
        description="Host header of the edge check's reads (no tenant: the pages are the same for every tenant)",
    )
    catalog_path: str = Field(default="/products", pattern=r"^/[a-z0-9/_-]*$", description="Lists the products")
    price_path: str = Field(
        default="/prices/{sku}", pattern=r"^/[a-z0-9/_-]*\{sku\}[a-z0-9/_-]*$", description="One product's price page"
    )


class TargetSpec(_Model):
    """Where an environment's versions run: `local` (processes behind HAProxy, the default) or `kubernetes`
    (a Deployment and a Service per version, traffic through a Gateway API HTTPRoute)."""

    kind: Literal["local", "kubernetes"] = "local"
    namespace: str | None = Field(default=None, description="kubernetes: default `releasegate-<environment>`")
    gateway: str | None = Field(default=None, description="kubernetes: the Gateway the HTTPRoute attaches to")
    gateway_namespace: str | None = Field(default=None, description="kubernetes: default the route's namespace")
    image: str | None = Field(
        default=None, description="kubernetes: image repository; versions run `<image>@<artifact digest>`"
    )
    tenant_header: str = Field(
        default="X-Tenant",
        description="kubernetes: the header naming the tenant, which the gateway sets from the Host and strips "
        "from clients' requests",
    )
    port: int = Field(default=8080, gt=0, lt=65536, description="kubernetes: the container's HTTP port")

    @model_validator(mode="after")
    def _kubernetes_needs_gateway_and_image(self) -> TargetSpec:
        if self.kind == "kubernetes" and (not self.gateway or not self.image):
            raise ValueError("a kubernetes target needs `gateway` and `image` (the repository images are pulled from)")
        return self


# A secret reference names a file under the secrets folder (`notifier/ops-slack.url`), never the secret itself: no
# scheme, no `..`, no absolute path, so a webhook URL pasted into the catalog is refused rather than committed.
SECRET_REF = r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*(\.[a-z0-9_-]+)*)+$"
SecretRef = Annotated[str, Field(pattern=SECRET_REF, max_length=200)]
# What a route can listen for: every release state of `release.status`, and `alert` for `release.alerts`.
NotificationEvent = Literal[
    "running",
    "awaiting_approval",
    "waiting_window",
    "paused",
    "rolling_back",
    "promoted",
    "rejected",
    "rolled_back",
    "rollback_failed",
    "aborted",
    "alert",
]
EMAIL = r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}$"


class NotificationFilter(_Model):
    """Which events a route takes; each list given must match (an omitted list matches everything)."""

    environments: Names | None = Field(default=None, description="e.g. [production]")
    events: list[NotificationEvent] | None = Field(default=None, description="release states, or `alert`")
    severities: list[Literal["info", "warning", "critical"]] | None = Field(
        default=None, description="an alert's severity, or the one docs/notifications.md gives each state"
    )


class EmailSpec(_Model):
    """Where an email route sends: the SMTP server (credentials are the route's `secret`) and the recipients."""

    host: str = Field(pattern=r"^[A-Za-z0-9.-]{1,253}$")
    port: int = Field(default=587, gt=0, lt=65536)
    tls: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="`none` only for a relay on the same host"
    )
    sender: str = Field(pattern=EMAIL)
    to: list[Annotated[str, Field(pattern=EMAIL)]] = Field(min_length=1, max_length=MAX_NAMES)


class NotificationRoute(_Model):
    name: Name
    channel: Literal["slack", "teams", "webhook", "email"]
    secret: SecretRef | None = Field(
        default=None,
        description="File under the secrets folder holding the webhook URL (slack, teams, webhook) or the SMTP "
        "`username:password` (email, optional)",
    )
    signing_secret: SecretRef | None = Field(
        default=None, description="webhook: file under the secrets folder holding the HMAC-SHA256 key"
    )
    email: EmailSpec | None = None
    when: NotificationFilter = NotificationFilter()

    @model_validator(mode="after")
    def _channel_settings(self) -> NotificationRoute:
        if self.channel != "email" and self.secret is None:
            raise ValueError(f"route {self.name!r}: a {self.channel} route needs `secret` (the file with its URL)")
        if (self.channel == "email") != (self.email is not None):
            raise ValueError(f"route {self.name!r}: `email` is for, and required by, email routes")
        if (self.channel == "webhook") != (self.signing_secret is not None):
            raise ValueError(f"route {self.name!r}: `signing_secret` is for, and required by, webhook routes")
        return self


class Notifications(_Model):
    """Who hears about this service's releases (services/notifier, docs/notifications.md)."""

    routes: list[NotificationRoute] = Field(default_factory=list, max_length=MAX_NAMES)

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, routes: list[NotificationRoute]) -> list[NotificationRoute]:
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise ValueError(f"route names repeat: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
        return routes


class ServiceEntry(_Model):
    apiVersion: Literal["releasegate.dev/v1"]
    kind: Literal["Service"]
    revision: int
    name: Name
    description: str = ""
    tier: int = Field(ge=1, le=3)
    owner: str
    environments: Names
    dr: DRRequirement = DRRequirement()
    rollout: Rollout = Rollout()
    verification: Verification = Verification()
    kpis: dict[str, KpiThreshold]
    journeys: dict[Name, JourneyTarget] = Field(
        default_factory=dict,
        max_length=MAX_NAMES,
        description="Allow-list of the synthetic journeys the verifier "
        "may run for this service: name → `module:function` (client, base_url, tenant, profile), in a package the "
        "catalog allows (JOURNEY_PACKAGES); commands name a journey, never a module",
    )
    synthetic: SyntheticJourneys | None = Field(
        default=None,
        description="Journeys run on a preview (and beside production canaries); `journey` is a name from `journeys`",
    )
    prometheus: dict[str, PromQuery] = Field(default_factory=dict, description="PromQL KPIs with guardrails")
    approval_required: bool = False
    approvers: Approvers = Approvers()
    domains: list[str] = Field(default=[], description="Business domains of the whole service, e.g. erp-sync")
    change_domains: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Business domain → bundle path globs; a change touching a path takes "
        "its domain (e.g. payment), paths matching none are unclassified",
    )
    security_controls: list[str] = Field(default=[], description="Controls every environment must declare")
    targets: dict[Name, TargetSpec] = Field(
        default_factory=dict, description="Deployment target per environment; an environment not named is `local`"
    )
    notifications: Notifications = Field(
        default_factory=Notifications, description="Notification routes (services/notifier)"
    )
    incidents: Incidents = Field(
        default_factory=Incidents, description="Incident follow-ups that block production releases"
    )
    edge: EdgeSpec | None = Field(
        default=None, description="Edge cache in front of the storefront: purged at cut-over, checked for stale prices"
    )
    peak_readiness: PeakReadiness | None = Field(
        default=None,
        description="The load gate at staging (verifiers/peak_load): the representative load profile, its SLOs and "
        "the capacity to keep, always or in peak-preparation windows",
    )

    def target(self, environment: str) -> TargetSpec:
        return self.targets.get(environment, TargetSpec())

    @field_validator("kpis")
    @classmethod
    def _detect_on_rates(cls, kpis: dict[str, KpiThreshold]) -> dict[str, KpiThreshold]:
        wrong = sorted(name for name, t in kpis.items() if t.detect is not None and name not in DETECTABLE_RATES)
        if wrong:
            raise ValueError(
                f"detect is the smallest drop of a success rate to catch, tested on "
                f"{' and '.join(sorted(DETECTABLE_RATES))} only; not on {', '.join(wrong)}"
            )
        return kpis

    @field_validator("journeys")
    @classmethod
    def _journeys_in_allowed_packages(cls, journeys: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        packages = (info.context or {}).get("journey_packages", JOURNEY_PACKAGES)
        for name, target in journeys.items():
            module = target.partition(":")[0]
            if not any(module == p or module.startswith(f"{p}.") for p in packages):
                raise ValueError(
                    f"journey {name!r} points at {target!r}, outside the packages journeys may come "
                    f"from ({', '.join(packages) or 'none'})"
                )
        return journeys

    @model_validator(mode="after")
    def _synthetic_journey_is_allowed(self) -> ServiceEntry:
        if self.synthetic is not None and self.synthetic.journey not in self.journeys:
            raise ValueError(
                f"synthetic.journey {self.synthetic.journey!r} is not in the entry's `journeys` "
                f"allow-list ({', '.join(sorted(self.journeys)) or 'empty'})"
            )
        return self

    @model_validator(mode="after")
    def _targets_name_environments(self) -> ServiceEntry:
        unknown = sorted(set(self.targets) - set(self.environments))
        if unknown:
            raise ValueError(f"targets named for environments the entry does not have: {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _replayer_is_the_services_own(self) -> ServiceEntry:
        package = self.name.replace("-", "_")
        module = (self.dr.replayer or "").partition(":")[0]
        if self.dr.replayer is not None and not (module == package or module.startswith(f"{package}.")):
            raise ValueError(
                f"dr.replayer {self.dr.replayer!r} is outside the service's own package {package!r}: a service "
                "replays its own business events only"
            )
        return self

    @model_validator(mode="after")
    def _blue_green_needs_a_preview(self) -> ServiceEntry:
        if self.rollout.strategy == "blue-green" and self.synthetic is None:
            raise ValueError("blue-green verifies green on a preview route: the entry needs `synthetic` journeys")
        if self.rollout.strategy == "tenant-phased" and not self.rollout.waves:
            raise ValueError("a tenant-phased rollout needs at least one wave before everyone")
        return self

    @model_validator(mode="after")
    def _peak_gate_can_finish(self) -> ServiceEntry:
        peak = self.peak_readiness
        if peak is None or not peak.can_run:
            return self
        staging = self.verification.verifiers("staging")
        if PEAK_LOAD_VERIFIER not in [*staging.required, *staging.advisory]:
            raise ValueError(
                f"peak_readiness needs the `{PEAK_LOAD_VERIFIER}` verifier at staging "
                "(verification.by_environment.staging.required, or advisory to only record it)"
            )
        # the gate loads stable, then the candidate, inside the staging window: a shorter window cuts it off
        if self.verification.staging_window_seconds < peak.gate_seconds:
            raise ValueError(
                f"peak_readiness loads each version for {peak.profile.duration_seconds:g}s: the staging window "
                f"({self.verification.staging_window_seconds:g}s) must be at least {peak.gate_seconds:g}s"
            )
        return self


class Catalog:
    def __init__(self, directory: Path, journey_packages: tuple[str, ...] = JOURNEY_PACKAGES) -> None:
        """`journey_packages`: the packages (and their sub-packages) journeys may be imported from."""
        self._dir, self._journey_packages = directory, journey_packages

    def get(self, service: str) -> ServiceEntry:
        try:
            check_name("service", service)
        except ValueError as exc:
            raise CatalogError(f"invalid service name: {exc}") from None
        path = self._dir / f"{service}.yaml"
        if not path.is_file():
            raise CatalogError(f"unknown service {service!r}: no catalog entry {path.name} in {self._dir}")
        try:
            entry = ServiceEntry.model_validate(
                yaml.safe_load(path.read_text()), context={"journey_packages": self._journey_packages}
            )
        except (ValidationError, yaml.YAMLError) as exc:
            raise CatalogError(f"catalog entry {path.name} is invalid: {exc}") from None
        if entry.name != service:
            raise CatalogError(f"catalog entry {path.name} names service {entry.name!r}")
        return entry
