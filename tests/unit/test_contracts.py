"""Event contracts: CloudEvents encoding, validation errors with reasons, committed schemas in sync."""

import json

import pytest

from contracts import generate
from contracts.cloudevents import ContractError, Envelope, decode, encode
from contracts.events import EVENT_TYPES, AbortRequested, CandidateSubmitted


def candidate_payload(**over):
    return {
        "release_id": "shop-v2-1",
        "service": "shop",
        "version": "v2",
        "artifact": {"digest": "sha256:" + "b" * 64, "uri": "store://x"},
        "source": {"repository": "r", "ref": "refs/heads/main", "commit": "c" * 40},
        "tests": {"passed": 1, "failed": 0},
        "author": "dev",
        **over,
    }


class TestCloudEventsOnKafka:
    def test_round_trip_keeps_attributes_key_and_trace(self):
        env = Envelope.new(
            CandidateSubmitted.model_validate(candidate_payload()),
            "ci",
            subject="shop-v2-1",
            tenant="acme",
            trace={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
        )
        key, value, headers = encode(env)
        back = decode(headers, value)
        assert key == b"shop-v2-1"
        assert (back.id, back.type, back.subject, back.tenant) == (env.id, env.type, "shop-v2-1", "acme")
        assert back.trace == env.trace and back.data == env.data
        assert dict(headers)["ce_type"] == b"dev.releasegate.candidate.submitted.v1"

    @pytest.mark.parametrize(
        "headers,value,reason",
        [
            ({"ce_id": "1", "ce_source": "s", "ce_type": "x"}, b"{}", "ce_specversion"),
            ({"ce_specversion": "1.0", "ce_source": "s", "ce_type": "x"}, b"{}", "ce_id"),
            (
                {
                    "ce_specversion": "1.0",
                    "ce_id": "1",
                    "ce_source": "s",
                    "ce_type": "dev.releasegate.candidate.submitted.v7",
                },
                b"{}",
                "unknown event type or schema version",
            ),
            (
                {
                    "ce_specversion": "1.0",
                    "ce_id": "1",
                    "ce_source": "s",
                    "ce_type": "dev.releasegate.abort.requested.v1",
                },
                b"{nope",
                "not valid JSON",
            ),
            (
                {
                    "ce_specversion": "1.0",
                    "ce_id": "1",
                    "ce_source": "s",
                    "ce_type": "dev.releasegate.abort.requested.v1",
                },
                b'{"release_id": "r"}',
                "actor: Field required",
            ),
        ],
    )
    def test_bad_records_are_refused_with_a_reason(self, headers, value, reason):
        with pytest.raises(ContractError, match=reason):
            decode(headers, value)

    def test_a_tag_is_not_an_artifact_digest(self):
        with pytest.raises(ValueError):
            from contracts.events import GateCheckRequested

            GateCheckRequested(
                release_id="r",
                step_id="s",
                service="shop",
                version="v2",
                digest="shop:latest",
                environment="staging",
                tests={"passed": 1, "failed": 0},
            )

    def test_unknown_fields_are_refused_not_ignored(self):
        with pytest.raises(ContractError, match="Extra inputs"):
            decode(
                {"ce_specversion": "1.0", "ce_id": "1", "ce_source": "s", "ce_type": AbortRequested.event_type},
                json.dumps({"release_id": "r", "actor": "a", "reason": "x", "force": True}).encode(),
            )

    def test_every_event_type_names_its_version(self):
        assert all(t.rsplit(".", 1)[1].startswith("v") for t in EVENT_TYPES)


class TestGeneratedDocuments:
    def test_committed_json_schemas_and_asyncapi_match_the_code(self):
        stale = [p.name for p, text in generate.rendered().items() if not p.is_file() or p.read_text() != text]
        assert stale == [], f"run `make schemas`: {stale}"

    def test_asyncapi_lists_the_public_topics(self):
        addresses = {c["address"] for c in generate.asyncapi()["channels"].values()}
        assert {"release.candidates", "release.status", "release.alerts", "release.deadletter"} <= addresses
