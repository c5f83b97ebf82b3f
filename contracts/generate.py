"""Generates the committed JSON Schemas (`contracts/schema/`) and AsyncAPI document (`contracts/asyncapi.yaml`)
from the pydantic models. `python -m contracts.generate [--check]`; a test fails when the copies drift."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from contracts import events as ev
from contracts import names, topics

HERE = Path(__file__).resolve().parent
SCHEMA_DIR = HERE / "schema"
ASYNCAPI = HERE / "asyncapi.yaml"

CHANNELS: dict[str, tuple[str, list[type[ev.Contract]]]] = {
    topics.CANDIDATES: ("Release candidates published by upstream CI (public input).", [ev.CandidateSubmitted]),
    topics.STATUS: ("Every state change of every release (public, for ops).", [ev.ReleaseStatusChanged]),
    topics.ALERTS: ("Alerts for ops: rollbacks, failed compensations, paused releases (public).", [ev.AlertRaised]),
    topics.DEADLETTER: ("Records no consumer could process, with the reason (public).", [ev.DeadLetter]),
    topics.CONTROL: (
        "Operator decisions on a release.",
        [
            ev.ApprovalGiven,
            ev.AbortRequested,
            ev.PauseRequested,
            ev.ResumeRequested,
            ev.PromoteRequested,
            ev.FollowupAdded,
            ev.FollowupClosed,
        ],
    ),
    topics.GATE_COMMANDS: ("Commands to the gatekeeper.", [ev.GateCheckRequested]),
    topics.DR_COMMANDS: ("Commands to the dr-checker.", [ev.DRCheckRequested]),
    topics.DEPLOY_COMMANDS: ("Commands to the deployer.", [ev.DeployRequested]),
    topics.VERIFY_COMMANDS: ("Commands to the verifier.", [ev.VerificationRequested]),
    topics.ROLLBACK_COMMANDS: ("Commands to the rollback service.", [ev.RollbackRequested]),
    topics.results_for("{principal}"): (
        "Step results back to the coordinator, one topic per producing principal, which alone may write it "
        "(deploy/kafka/acls.yaml): gatekeeper, dr-checker, deployer, rollback, and verifier-<name> for each "
        "verifier's verdicts and heartbeats.",
        [
            ev.GateCheckFinished,
            ev.DRCheckFinished,
            ev.DeployFinished,
            ev.VerificationFinished,
            ev.RollbackFinished,
            ev.VerifierHeartbeat,
        ],
    ),
    topics.ENVIRONMENTS: (
        "The deployer's read model: what runs in each environment of each service, keyed by service and environment "
        "(compacted; only the deployer writes it, the gatekeeper and the core verifier read it).",
        [ev.EnvironmentState],
    ),
    topics.SHOP_EVENTS: (
        "Business events of the sample shop, labelled with version and tenant.",
        [
            ev.CheckoutAttempted,
            ev.CheckoutSucceeded,
            ev.CheckoutFailed,
            ev.PaymentAuthorized,
            ev.PaymentDeclined,
            ev.OrderPlaced,
        ],
    ),
}
CE_HEADERS = {
    "type": "object",
    "description": "CloudEvents 1.0 binary mode: attributes as ce_* headers; Kafka key = subject (release id). "
    f"At most {names.MAX_HEADERS} headers, each a UTF-8 value of at most {names.MAX_HEADER_VALUE} "
    f"bytes without control characters, {names.MAX_HEADER_BYTES} bytes in all, none repeated.",
    "required": ["ce_specversion", "ce_id", "ce_source", "ce_type"],
    "maxProperties": names.MAX_HEADERS,
    "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$", "maxLength": names.MAX_HEADER_NAME},
    "additionalProperties": {"type": "string", "maxLength": names.MAX_HEADER_VALUE, "pattern": names.LABEL},
    "properties": {
        "ce_specversion": {"const": "1.0"},
        "ce_id": {"type": "string", "pattern": names.OPAQUE_ID, "maxLength": names.MAX_OPAQUE_ID},
        "ce_source": {"type": "string", "pattern": names.EVENT_SOURCE, "maxLength": names.MAX_EVENT_SOURCE},
        "ce_type": {"type": "string", "description": "Event type with its version, e.g. ...submitted.v1"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {
            "type": "string",
            "pattern": names.RELEASE_ID,
            "maxLength": names.MAX_RELEASE_ID,
            "description": "The release id.",
        },
        "ce_tenant": {"type": "string", "pattern": names.NAME, "maxLength": names.MAX_NAME},
        "traceparent": {"type": "string", "maxLength": names.MAX_HEADER_VALUE},
        "content-type": {"const": "application/json"},
    },
}
LIMITS = (
    f"Every record is refused (dead-lettered with the reason) unread when its value exceeds "
    f"{names.MAX_VALUE_BYTES} bytes; its value must be UTF-8 JSON nested at most {names.MAX_DEPTH} deep, with "
    f"integers within 64 bits, no NaN or Infinity, and no NUL character or lone surrogate in any string. "
    f"Names (services, environments, tenants, databases, versions, principals, KPIs, journeys) match "
    f"`{names.NAME}`; release ids `{names.RELEASE_ID}`; step ids `{names.STEP_ID}`; digests "
    f"`{names.SHA256_DIGEST}`. See docs/contracts.md."
)


def schemas() -> dict[str, dict[str, Any]]:
    return {m.event_type: m.model_json_schema() for m in ev.EVENT_TYPES.values()}


def asyncapi() -> dict[str, Any]:
    messages, channels, operations = {}, {}, {}
    for topic, (description, models) in CHANNELS.items():
        cid = topic.replace(".", "_").replace("-", "_").replace("{", "").replace("}", "")
        refs = {}
        for m in models:
            mid = m.event_type.replace(".", "_").replace("-", "_")
            messages[mid] = {
                "name": m.event_type,
                "title": m.__name__,
                "summary": (m.__doc__ or m.__name__).strip().splitlines()[0],
                "contentType": "application/json",
                "headers": {"$ref": "#/components/schemas/ce_headers"},
                "payload": {"$ref": f"schema/{m.event_type}.json"},
            }
            refs[mid] = {"$ref": f"#/components/messages/{mid}"}
        channels[cid] = {"address": topic, "description": description, "messages": refs}
        if "{principal}" in topic:
            channels[cid]["parameters"] = {"principal": {"description": "The producing Kafka principal."}}
        operations[f"publish_{cid}"] = {"action": "send", "channel": {"$ref": f"#/channels/{cid}"}}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "releasegate release events",
            "version": "1",
            "description": "Versioned events of the release saga, CloudEvents 1.0 on Apache Kafka. " + LIMITS,
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": {"ce_headers": CE_HEADERS}},
    }


def rendered() -> dict[Path, str]:
    files = {SCHEMA_DIR / f"{t}.json": json.dumps(s, indent=2, sort_keys=True) + "\n" for t, s in schemas().items()}
    files[ASYNCAPI] = yaml.safe_dump(asyncapi(), sort_keys=False, width=120)
    return files


def main() -> int:
    files = rendered()
    if "--check" in sys.argv:
        stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
        for p in stale:
            print(f"out of date: {p.relative_to(HERE.parent)}")
        return 1 if stale else 0
    SCHEMA_DIR.mkdir(exist_ok=True)
    for old in SCHEMA_DIR.glob("*.json"):
        if old not in files:
            old.unlink()
    for path, text in files.items():
        path.write_text(text)
    print(f"wrote {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
