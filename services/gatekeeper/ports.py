"""What the gatekeeper's handler needs from the world, as ports: `bootstrap.py` plugs in the real adapters
(files, the artifact store, regopy, PostgreSQL), the unit tests in-memory fakes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from contracts.cloudevents import Envelope
from contracts.events import Contract, EnvironmentState
from releasegate_platform.catalog import ServiceEntry
from releasegate_platform.identity import Identities
from releasegate_platform.regional import RegionalSet
from releasegate_platform.supply_chain import TrustRoot
from services.gatekeeper.calendar import Calendar
from services.gatekeeper.domain import GateDecision, PolicyResult


class CatalogPort(Protocol):
    def get(self, service: str) -> ServiceEntry:
        """The service's catalog entry; CatalogError when it has none or it is invalid."""
        ...


class BundlesPort(Protocol):
    def read(self, digest: str) -> dict[str, bytes]:
        """Every file of the artifact `digest`, verified against its digest; BundleUnreadable otherwise."""
        ...


class PolicyPort(Protocol):
    version: str

    def evaluate(self, policy_input: dict[str, Any]) -> PolicyResult:
        """PolicyError when the policy cannot judge the input."""
        ...


class FilesPort(Protocol):
    """Trust root, calendar, identities and environment manifests, re-read on every request so edits apply at
    once; each raises its own error when its file is unreadable (a gate never passes on a broken file)."""

    def trust_root(self) -> TrustRoot: ...

    def calendar(self) -> Calendar: ...

    def identities(self) -> Identities: ...

    def environment_controls(self, environment: str) -> list[str]: ...


class ParityPort(Protocol):
    async def report(self, entry: ServiceEntry, regional: RegionalSet | None) -> dict[str, Any]:
        """Staging vs production as the policy reads it (`parity.Report.as_input`); never raises: what could
        not be measured is an error in the report."""
        ...


class GateStorePort(Protocol):
    async def environment(self, service: str, environment: str) -> EnvironmentState | None:
        """The newest state the deployer published for this environment; None before its first."""
        ...

    async def keep_environment(self, state: EnvironmentState) -> bool:
        """Keep `state` unless a state with the same or a higher sequence is kept; True if it was kept."""
        ...

    async def record(self, decision: GateDecision) -> None:
        """Store a decision once per request id (a repeated request stores nothing)."""
        ...


class RepliesPort(Protocol):
    async def once(self, envelope: Envelope, compute: Callable[[], Awaitable[Contract]]) -> None:
        """Answer the command `envelope` with what `compute` returns, once: a command seen before is not
        answered again (and `compute` not run)."""
        ...
