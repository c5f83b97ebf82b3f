"""Staging vs production parity: the pure comparison behind `releasegate parity` and the production gate.

Each environment is described by flat facts (`deployment.strategy`, `database.server_version`,
`kafka.shop.events.retention.ms`, `security.control.waf`, `integration.eu.payment.contract`, `edge.cache` …) that
probes gathered. A difference is documented when `deploy/parity.yaml` accepts exactly that key with exactly these
values (each side one value or a short list of them; with a reason and who accepted it); an accepted difference
whose values moved is drift again. A probe that could not answer is an error, and an error blocks like drift:
parity that was not measured never passes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENVIRONMENTS = ("staging", "production")
ABSENT = "(absent)"
# A setting of something one environment does not have is not a difference of its own: an edge cache's TTL is
# compared only when both environments have an edge cache (their `edge.cache` agrees).
GROUPS = {"edge.": "edge.cache"}
KEY = r"^[a-z][a-z0-9_]*(\.[A-Za-z0-9_-]+)+$"


class ParityFileError(ValueError):
    """The accepted-differences file is unreadable or invalid: nothing is accepted, the gate blocks."""


@dataclass(frozen=True)
class Facts:
    """What the probes found about one environment: fact key → value, and what they could not find out."""

    environment: str
    values: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Value = Annotated[str, Field(max_length=300)]
# one value, or the few values a side may have (a production rollout strategy: staging is always deployed whole)
Values = Value | Annotated[list[Value], Field(min_length=1, max_length=20)]


class Accepted(_Model):
    """One documented difference: exactly this key with exactly these values, why, and who accepted it."""

    key: Annotated[str, Field(pattern=KEY, max_length=200)]
    staging: Values
    production: Values
    reason: Annotated[str, Field(min_length=10, max_length=500)]
    accepted_by: Annotated[str, Field(min_length=1, max_length=100)]
    accepted_on: date
    services: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]] = Field(
        default=[], description="Services it applies to; empty: every service"
    )

    def accepts(self, staging: str, production: str) -> bool:
        return staging in _listed(self.staging) and production in _listed(self.production)

    def shown(self) -> tuple[str, str]:
        return " or ".join(_listed(self.staging)), " or ".join(_listed(self.production))


def _listed(values: str | list[str]) -> list[str]:
    return [values] if isinstance(values, str) else values


class AcceptedFile(_Model):
    version: Literal[1]
    accepted: list[Accepted] = Field(default=[], max_length=500)


def load_accepted(path: Path) -> list[Accepted]:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ParityFileError(f"cannot read the accepted differences {path.name}: {type(exc).__name__}") from None
    return parse_accepted(document, path.name)


def parse_accepted(document: Any, name: str = "parity.yaml") -> list[Accepted]:
    try:
        accepted = AcceptedFile.model_validate(document).accepted
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ParityFileError(f"{name} is invalid: {errors[:800]}") from None
    keys = [(a.key, tuple(a.services)) for a in accepted]
    if len(keys) != len(set(keys)):
        raise ParityFileError(f"{name} accepts the same key twice")
    return accepted


@dataclass(frozen=True)
class Difference:
    key: str
    staging: str
    production: str
    # documented: accepted with these values; undocumented: not accepted; changed: accepted with other values
    status: Literal["documented", "undocumented", "changed"]
    reason: str | None = None
    accepted_by: str | None = None
    accepted: tuple[str, str] | None = None

    @property
    def drift(self) -> bool:
        return self.status != "documented"

    def sentence(self) -> str:
        values = f"staging {self.staging}, production {self.production}"
        if self.status == "documented":
            return f"{self.key}: {values} (documented: {self.reason} — accepted by {self.accepted_by})"
        if self.status == "changed" and self.accepted is not None:
            return (
                f"{self.key}: {values}; the accepted difference was staging {self.accepted[0]}, "
                f"production {self.accepted[1]}"
            )
        return f"{self.key}: {values} (undocumented)"


@dataclass(frozen=True)
class Report:
    service: str
    differences: list[Difference]
    errors: list[str]
    compared: int

    @property
    def drift(self) -> list[Difference]:
        return [d for d in self.differences if d.drift]

    @property
    def blocking(self) -> bool:
        return bool(self.drift or self.errors)

    def as_input(self) -> dict[str, Any]:
        """The report as the gate policy reads it (`input.parity`)."""
        return {
            "measured": True,
            "compared": self.compared,
            "errors": list(self.errors),
            "drift": [{"key": d.key, "status": d.status, "msg": d.sentence()} for d in self.drift],
            "documented": [{"key": d.key, "msg": d.sentence()} for d in self.differences if not d.drift],
        }

    def lines(self) -> list[str]:
        out = [f"Parity of {self.service}: staging vs production, {self.compared} facts compared."]
        out += [f"  cannot compare: {e}" for e in self.errors]
        out += [f"  DRIFT {d.sentence()}" for d in self.drift]
        out += [f"  documented {d.sentence()}" for d in self.differences if not d.drift]
        if not self.differences and not self.errors:
            out.append("  staging matches production on every fact compared.")
        return out


def compare(service: str, staging: Facts, production: Facts, accepted: list[Accepted]) -> Report:
    """Every fact where staging and production differ, each documented or drift; probe errors of either side."""
    applicable = {a.key: a for a in accepted if not a.services or service in a.services}
    differences = []
    keys = sorted(set(staging.values) | set(production.values))
    for key in keys:
        s, p = staging.values.get(key, ABSENT), production.values.get(key, ABSENT)
        if s == p or _not_shared(key, staging, production):
            continue
        entry = applicable.get(key)
        if entry is None:
            differences.append(Difference(key, s, p, "undocumented"))
        elif entry.accepts(s, p):
            differences.append(Difference(key, s, p, "documented", entry.reason, entry.accepted_by))
        else:
            differences.append(Difference(key, s, p, "changed", entry.reason, entry.accepted_by, entry.shown()))
    errors = [f"{f.environment}: {e}" for f in (staging, production) for e in f.errors]
    return Report(service, differences, errors, len(keys))


def _not_shared(key: str, staging: Facts, production: Facts) -> bool:
    for prefix, presence in GROUPS.items():
        if key.startswith(prefix) and key != presence:
            return staging.values.get(presence, ABSENT) != production.values.get(presence, ABSENT)
    return False


def unmeasured(reason: str) -> dict[str, Any]:
    """The policy input when no report could be made at all: blocks with the reason."""
    return {"measured": False, "compared": 0, "errors": [reason], "drift": [], "documented": []}
