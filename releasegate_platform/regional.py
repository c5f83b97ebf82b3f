"""Regional configuration as a versioned asset: per environment and region, the payment, tax and fulfilment
endpoints with the contract version each speaks, and feature settings. It ships inside the service's bundle
(`config/regions/<environment>.yaml`), so it is part of the signed, immutable artifact and the difference between a
candidate and production is a bundle diff. Validated by a schema (`RegionalConfig`, JSON Schema from
`python -m releasegate_platform.regional`) and checked for secrets: only references to a secret store may appear."""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

PREFIX = "config/regions/"
FILE = re.compile(r"config/regions/([a-z][a-z0-9-]{0,30})\.yaml")
MAX_FILE_BYTES = 64 * 1024
MAX_NODES = 5000  # YAML aliases can make a small file a huge tree: stop walking long before that hurts
SECRET_REF = re.compile(r"secret://[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)+")
FILE_REF = re.compile(r"file:[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)*")
SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|pwd|token|secret|api[_-]?key|private[_-]?key|credential|authorization|signing", re.I
)
# Shapes of well-known credentials: a match is refused whatever key holds it.
KNOWN_SECRET = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\bAKIA[0-9A-Z]{16}\b|\b(sk|rk)_(live|test)_[0-9A-Za-z]{10,}"
    r"|\bgh[pousr]_[0-9A-Za-z]{20,}|\bxox[abprs]-[0-9A-Za-z-]{10,}|\beyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]{8,}\."
)
URL_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]*@", re.I)
CONTRACT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
REGION = r"^[a-z][a-z0-9-]{0,30}$"
FEATURE = r"^[a-z][a-z0-9_]{0,62}$"
URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")
INTEGRATIONS = ("payment", "tax", "fulfilment")


class RegionalConfigError(ValueError):
    """A regional configuration that is unreadable, invalid or carries a secret value."""


def is_secret_ref(value: str) -> bool:
    """A reference to a secret store: `secret://<store>/<path>` or `file:<path under .run/secrets>` (relative,
    without `..`); the value itself never appears in the configuration."""
    if ".." in value.split("/") or "//" in value.removeprefix("secret://"):
        return False
    return SECRET_REF.fullmatch(value) is not None or FILE_REF.fullmatch(value) is not None


def _secret_ref(value: str) -> str:
    if not is_secret_ref(value):
        raise ValueError("must be a secret reference (secret://store/path or file:relative/path)")
    return value


def _endpoint(value: str) -> str:
    if URL.fullmatch(value) is None:
        raise ValueError("must be an http(s) URL without credentials, query or fragment")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Integration(_Model):
    """One integration in one region: where it is, which contract version it speaks, how it authenticates."""

    endpoint: Annotated[
        str, Field(max_length=300, description="http(s) URL; no credentials in it"), AfterValidator(_endpoint)
    ]
    contract: Annotated[str, Field(pattern=CONTRACT, description="Contract (API) version the endpoint speaks")]
    sandbox: bool = Field(default=False, description="A provider's sandbox rather than its production service")
    credentials: (
        Annotated[
            str,
            Field(max_length=200, description="Secret reference: secret://store/path or file:path"),
            AfterValidator(_secret_ref),
        ]
        | None
    ) = None


Feature = bool | int | Annotated[str, Field(max_length=100)]


class Region(_Model):
    payment: Integration
    tax: Integration
    fulfilment: Integration
    features: dict[Annotated[str, Field(pattern=FEATURE)], Feature] = Field(default_factory=dict, max_length=50)


class RegionalConfig(_Model):
    """`config/regions/<environment>.yaml` in a bundle."""

    apiVersion: Literal["releasegate.dev/v1"]
    kind: Literal["RegionalConfig"]
    environment: Annotated[str, Field(pattern=REGION)]
    revision: int = Field(ge=1, description="Bumped on every change")
    regions: dict[Annotated[str, Field(pattern=REGION)], Region] = Field(min_length=1, max_length=50)


@dataclass(frozen=True)
class RegionalSet:
    """The regional configurations of one bundle, by environment, and what is wrong with them (never a value)."""

    configs: dict[str, RegionalConfig] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def present(self) -> bool:
        return bool(self.configs) or bool(self.problems)


def load(files: Mapping[str, bytes]) -> RegionalSet:
    """Every `config/regions/*.yaml` of a bundle, validated and checked for secrets; problems name the file and
    key path, never the offending value."""
    configs: dict[str, RegionalConfig] = {}
    problems: list[str] = []
    for path in sorted(p for p in files if p.startswith(PREFIX)):
        match = FILE.fullmatch(path)
        if match is None:
            problems.append(
                f"{_printable(path)}: not a regional configuration name (config/regions/<environment>.yaml)"
            )
            continue
        try:
            config = parse(files[path], match.group(1))
        except RegionalConfigError as exc:
            problems.append(f"{path}: {exc}")
            continue
        configs[config.environment] = config
    return RegionalSet(configs, problems)


def parse(raw: bytes, environment: str) -> RegionalConfig:
    if len(raw) > MAX_FILE_BYTES:
        raise RegionalConfigError(f"{len(raw)} bytes, more than the {MAX_FILE_BYTES} a regional configuration may have")
    try:
        document = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RegionalConfigError(f"not UTF-8 YAML ({type(exc).__name__})") from None
    found = secrets_in(document)
    if found:
        raise RegionalConfigError("secret values are not allowed, only secret references: " + "; ".join(found))
    try:
        config = RegionalConfig.model_validate(document)
    except ValidationError as exc:
        # pydantic's messages echo inputs: name the location and the rule only
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}" for e in exc.errors())
        raise RegionalConfigError(f"does not match the schema: {errors[:1000]}") from None
    if config.environment != environment:
        raise RegionalConfigError(f"declares environment {config.environment!r}, its file name says {environment!r}")
    return config


def secrets_in(document: Any) -> list[str]:
    """Key paths of the values that look like secrets (never the values): a secret-named key with a literal
    value, a URL with credentials, a known credential shape or a long high-entropy token."""
    found = []
    for path, value in _scalars(document):
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            continue
        text = str(value)
        if is_secret_ref(text):
            continue
        key = path.rsplit(".", 1)[-1]
        if SECRET_KEY.search(key) and text.strip():
            found.append(f"{path} holds a literal value under a secret's name")
        elif URL_WITH_CREDENTIALS.search(text):
            found.append(f"{path} is a URL with credentials")
        elif KNOWN_SECRET.search(text):
            found.append(f"{path} has the shape of a credential")
        elif _high_entropy(text):
            found.append(f"{path} looks like a generated secret (high entropy)")
    return found


def _scalars(document: Any) -> Iterator[tuple[str, Any]]:
    stack: list[tuple[str, Any]] = [("", document)]
    seen = 0
    while stack:
        path, node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise RegionalConfigError(f"more than {MAX_NODES} values (YAML aliases?)")
        if isinstance(node, dict):
            for key, value in node.items():
                stack.append((f"{path}.{_printable(str(key))}" if path else _printable(str(key)), value))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", value) for i, value in enumerate(node))
        else:
            yield path or "(document)", node


def _high_entropy(text: str) -> bool:
    if len(text) < 24 or any(c.isspace() for c in text) or URL.fullmatch(text):
        return False
    counts = Counter(text)
    entropy = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    return entropy >= 4.0


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:80]


def flatten(config: RegionalConfig) -> dict[str, str]:
    """`<region>.<integration>.<field>` → value, for diffs and parity."""
    out: dict[str, str] = {}
    for region, settings in sorted(config.regions.items()):
        for name in INTEGRATIONS:
            integration: Integration = getattr(settings, name)
            for key, value in integration.model_dump().items():
                if value is not None:
                    out[f"{region}.{name}.{key}"] = json.dumps(value) if not isinstance(value, str) else value
        for key, value in sorted(settings.features.items()):
            out[f"{region}.features.{key}"] = json.dumps(value) if not isinstance(value, str) else value
    return out


def _shown(key: str, value: str) -> str:
    return "(secret reference)" if key.endswith(".credentials") else value


def diff(production: RegionalSet, candidate: RegionalSet) -> dict[str, Any]:
    """What the candidate's regional configuration changes against production's, per environment: keys added,
    removed and changed, values shown except secret references."""
    out: dict[str, Any] = {}
    for env in sorted(set(production.configs) | set(candidate.configs)):
        before = flatten(production.configs[env]) if env in production.configs else {}
        after = flatten(candidate.configs[env]) if env in candidate.configs else {}
        added = [{"key": k, "value": _shown(k, after[k])} for k in sorted(set(after) - set(before))]
        removed = [{"key": k, "value": _shown(k, before[k])} for k in sorted(set(before) - set(after))]
        changed = [
            {"key": k, "from": _shown(k, before[k]), "to": _shown(k, after[k])}
            for k in sorted(set(before) & set(after))
            if before[k] != after[k]
        ]
        if added or removed or changed:
            out[env] = {"added": added, "removed": removed, "changed": changed}
    return out


def describe_diff(changes: Mapping[str, Any]) -> list[str]:
    """The regional diff as readable lines (explain)."""
    lines = []
    for env, parts in sorted(changes.items()):
        for item in parts.get("added", []):
            lines.append(f"{env}: + {item['key']} = {item['value']}")
        for item in parts.get("removed", []):
            lines.append(f"{env}: - {item['key']} (was {item['value']})")
        for item in parts.get("changed", []):
            if item["from"] == item["to"]:  # both secret references
                lines.append(f"{env}: ~ {item['key']} now names another secret")
            else:
                lines.append(f"{env}: ~ {item['key']}: {item['from']} → {item['to']}")
    return lines


def json_schema() -> dict[str, Any]:
    return RegionalConfig.model_json_schema()


if __name__ == "__main__":
    json.dump(json_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
