"""The bus policy (deploy/kafka/acls.yaml) as data: principals, the topics each may write and read, the consumer
groups it may join, and who produced a record given the topic it arrived on. Pure: the broker side is
`bus_admin`; `python -m releasegate_runtime.bus table` prints the policy as the docs show it."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from contracts import topics

POLICY_FILE = Path(__file__).resolve().parents[1] / "deploy" / "kafka" / "acls.yaml"
PRINCIPAL_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
MAX_PRINCIPAL_LENGTH = 64
VERIFIER_PREFIX = "verifier-"


class BusPolicyError(ValueError):
    """The bus policy file is missing or malformed."""


@dataclass(frozen=True)
class Grant:
    """One ACL binding: ALLOW `operation` on a `resource` (topic or group), literal or prefixed."""

    principal: str
    resource: str  # "topic" | "group"
    name: str
    prefixed: bool
    operation: str  # "WRITE" | "READ" | "DESCRIBE_CONFIGS"

    @property
    def shown(self) -> str:
        return self.name + ("*" if self.prefixed else "")


@dataclass(frozen=True)
class Principal:
    name: str
    description: str
    produce: tuple[str, ...]
    consume: tuple[str, ...]
    groups: tuple[str, ...]
    template: str | None
    describe_configs: tuple[str, ...] = ()  # topics whose configuration it reads (retention, for replay)

    @property
    def results_topic(self) -> str | None:
        """Its own result topic, if it answers commands (workers and verifiers)."""
        topic = topics.results_for(self.name)
        return topic if topic in self.produce else None

    @property
    def verifier_name(self) -> str | None:
        """The verifier name whose verdicts this principal alone may publish."""
        return self.name[len(VERIFIER_PREFIX) :] if self.template == "verifier" else None

    def grants(self) -> list[Grant]:
        out = []
        for names, resource, operation in (
            (self.produce, "topic", "WRITE"),
            (self.consume, "topic", "READ"),
            (self.groups, "group", "READ"),
            (self.describe_configs, "topic", "DESCRIBE_CONFIGS"),
        ):
            for name in names:
                out.append(Grant(self.name, resource, name.rstrip("*"), name.endswith("*"), operation))
        return out


@dataclass(frozen=True)
class BusPolicy:
    principals: dict[str, Principal]
    templates: dict[str, dict[str, list[str]]]

    @classmethod
    def load(cls, path: Path = POLICY_FILE) -> BusPolicy:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise BusPolicyError(f"cannot read the bus policy {path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("principals"), dict):
            raise BusPolicyError(f"{path}: expected a mapping with `principals`")
        templates = data.get("templates") or {}
        policy = cls({}, templates)
        for name, spec in data["principals"].items():
            policy.principals[str(name)] = policy.build(str(name), spec or {})
        return policy

    def build(self, name: str, spec: dict[str, Any]) -> Principal:
        """A principal from its spec, merged with its template (`{principal}` filled in)."""
        check_principal_name(name)
        template_name = spec.get("template")
        if template_name is not None and template_name not in self.templates:
            raise BusPolicyError(f"principal {name}: unknown template {template_name!r}")
        if template_name == "verifier" and not name.startswith(VERIFIER_PREFIX):
            raise BusPolicyError(f"principal {name}: verifier principals are named {VERIFIER_PREFIX}<verifier>")
        template = self.templates.get(template_name, {}) if template_name else {}

        def merged(key: str) -> tuple[str, ...]:
            values = [*(template.get(key) or []), *(spec.get(key) or [])]
            if not all(isinstance(v, str) and v for v in values):
                raise BusPolicyError(f"principal {name}: `{key}` must be a list of names")
            return tuple(dict.fromkeys(v.replace("{principal}", name) for v in values))

        return Principal(
            name,
            str(spec.get("description", "")),
            merged("produce"),
            merged("consume"),
            merged("groups"),
            template_name,
            merged("describe_configs"),
        )

    def with_verifier(self, verifier: str) -> Principal:
        """The principal a team verifier gets when it is registered (the `verifier` template)."""
        return self.build(VERIFIER_PREFIX + verifier, {"template": "verifier", "description": "team verifier"})

    def grants(self) -> list[Grant]:
        return [g for p in self.principals.values() for g in p.grants()]

    def topics(self) -> list[str]:
        """Every literal topic the policy names (prefixes are not topics)."""
        named = {g.name for g in self.grants() if g.resource == "topic" and not g.prefixed}
        return sorted(named | set(topics.ALL))

    def results_producers(self) -> dict[str, Principal]:
        """Result topic → the one principal allowed to write it."""
        return {p.results_topic: p for p in self.principals.values() if p.results_topic}

    def table(self) -> str:
        """Markdown: principal × topic/group × operation."""
        rows = ["| principal | writes | reads | consumer groups | reads configuration of |", "|---|---|---|---|---|"]
        for p in self.principals.values():
            rows.append(
                f"| `{p.name}` | {_cell(p.produce)} | {_cell(p.consume)} | {_cell(p.groups)} "
                f"| {_cell(p.describe_configs)} |"
            )
        return "\n".join(rows)


def _cell(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "—"


def check_principal_name(name: str) -> str:
    if len(name) > MAX_PRINCIPAL_LENGTH or not PRINCIPAL_NAME.match(name):
        raise BusPolicyError(
            f"principal name {name[:80]!r} must match {PRINCIPAL_NAME.pattern} "
            f"(at most {MAX_PRINCIPAL_LENGTH} characters)"
        )
    return name


if __name__ == "__main__":
    if sys.argv[1:] == ["table"]:
        print(BusPolicy.load().table())
    else:
        sys.exit("usage: python -m releasegate_runtime.bus table")
