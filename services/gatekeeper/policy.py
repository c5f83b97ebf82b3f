"""The gate policy as code: Rego modules in `policies/gate/` evaluated in-process with regopy, plus their data.
The adapter behind the handler's policy port; what it returns (`PolicyResult`) is the gatekeeper's own model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from regopy import Interpreter

from services.gatekeeper.domain import GateError, PolicyResult

QUERY = "data.releasegate.gate"


class PolicyError(GateError):
    """The policy could not be loaded or evaluated; a gate never passes on a broken policy."""


class Policy:
    """Loaded once per process; `version` names the VERSION file and the digest of every policy file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            self._modules = {p.name: p.read_text() for p in sorted((directory / "gate").glob("*.rego"))}
            self._data = yaml.safe_load((directory / "data.yaml").read_text())
            number = (directory / "VERSION").read_text().strip()
        except (OSError, yaml.YAMLError) as exc:
            raise PolicyError(f"cannot load the gate policy from {directory}: {exc}") from None
        if not self._modules:
            raise PolicyError(f"no Rego modules in {directory / 'gate'}")
        h = hashlib.sha256()
        for name, text in self._modules.items():
            h.update(name.encode() + b"\0" + text.encode() + b"\0")
        h.update(json.dumps(self._data, sort_keys=True).encode())
        self.version = f"v{number} (sha256:{h.hexdigest()[:12]})"

    @property
    def data(self) -> dict[str, Any]:
        return self._data

    def evaluate(self, policy_input: dict[str, Any]) -> PolicyResult:
        # A fresh interpreter per evaluation: no state carries over from one release's input to the next.
        rego = Interpreter()
        for name, text in self._modules.items():
            rego.add_module(name, text)
        rego.add_data_json(json.dumps(self._data))
        rego.set_input_term(json.dumps(policy_input))
        output = rego.query(QUERY)
        if not output.ok():
            raise PolicyError(f"gate policy failed to evaluate: {output}")
        expressions = json.loads(str(output)).get("expressions") or [{}]
        result = expressions[0]
        if "risk" not in result:
            raise PolicyError("gate policy produced no risk class (is `input` complete?)")
        return PolicyResult(
            deny=sorted(result.get("deny", []), key=_key),
            wait=sorted(result.get("wait", []), key=_key),
            warn=sorted(result.get("warn", []), key=_key),
            risk=result["risk"],
            risk_reasons=sorted(result.get("risk_reasons", [])),
            required_approvals=int(result.get("required_approvals", 0)),
            approvers=sorted(result.get("approvers", [])),
            exceptions=sorted(result.get("exceptions", [])),
            refused=sorted(result.get("refused", [])),
            rules=result.get("rules", {}),
            requires=sorted(result.get("requires", [])),
        )


def _key(entry: dict[str, str]) -> tuple[str, str]:
    return entry["rule"], entry["msg"]


def input_digest(policy_input: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(policy_input, sort_keys=True).encode()).hexdigest()
