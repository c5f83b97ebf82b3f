"""The deployer's read model (`services/deployer/read_model.py`): the state it reads from its own tables, and the
record key that lets compaction keep exactly the newest state of each service and environment."""

from __future__ import annotations

import pytest

from contracts.cloudevents import Envelope, decode, encode
from contracts.names import MAX_RELEASE_ID, RELEASE_ID, matches
from services.deployer import read_model

DIGEST1, DIGEST2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


class FakeConnection:
    """The two reads `read_model.read` makes, answered from rows as PostgreSQL would return them."""

    def __init__(self, stable: dict | None, instances: list[dict]) -> None:
        self.stable, self.instances = stable, instances

    async def fetchrow(self, sql: str, *args):
        assert "FROM environments" in sql
        return self.stable

    async def fetch(self, sql: str, *args):
        assert "FROM instances" in sql and "state = 'serving'" in sql
        return self.instances


def instance(version: str, digest: str, port: int, release_id: str | None = None) -> dict:
    return {"version": version, "digest": digest, "release_id": release_id, "port": port}


class TestTheStateRead:
    async def test_versions_are_grouped_with_their_endpoints_and_the_weights_the_target_reports(self):
        conn = FakeConnection(
            {"stable_version": "v1", "stable_digest": DIGEST1},
            [
                instance("v1", DIGEST1, 18001),
                instance("v2", DIGEST2, 18002, "shop-v2-1a2b3c4d"),
                instance("v1", DIGEST1, 18003),
            ],
        )
        state = await read_model.read(conn, "shop", "production", {"v1": 90, "v2": 10}, sequence=7)
        assert (state.sequence, state.stable_version, state.stable_digest) == (7, "v1", DIGEST1)
        assert [(s.version, s.weight, s.endpoints, s.release_id) for s in state.serving] == [
            ("v1", 90, ["http://127.0.0.1:18001", "http://127.0.0.1:18003"], None),
            ("v2", 10, ["http://127.0.0.1:18002"], "shop-v2-1a2b3c4d"),
        ]

    async def test_an_environment_before_its_first_version_has_no_stable_and_nothing_serving(self):
        state = await read_model.read(FakeConnection(None, []), "shop", "staging", {}, sequence=1)
        assert (state.stable_version, state.stable_digest, state.serving) == (None, None, [])

    async def test_a_version_the_target_gives_no_weight_serves_at_zero(self):
        conn = FakeConnection({"stable_version": "v1", "stable_digest": DIGEST1}, [instance("v2", DIGEST2, 18002)])
        state = await read_model.read(conn, "shop", "staging", {"v1": 100}, sequence=3)
        assert [(s.version, s.weight) for s in state.serving] == [("v2", 0)]

    async def test_the_state_travels_as_a_valid_cloudevent_keyed_by_service_and_environment(self):
        state = await read_model.read(FakeConnection(None, []), "shop", "production", {}, sequence=1)
        key, value, headers = encode(Envelope.new(state, read_model.SOURCE, read_model.key("shop", "production")))
        assert key == b"shop.production"
        assert decode(headers, value).data == state


class TestRecordKeys:
    @pytest.mark.parametrize(
        ("pair", "other"),
        [
            (("a.b", "c"), ("a", "b.c")),  # a dot in the service could make two pairs read alike
            (("shop", "production"), ("shop", "staging")),
            (("x" * 63, "production"), ("x" * 63, "staging")),
        ],
    )
    def test_different_environments_never_share_a_key(self, pair, other):
        assert read_model.key(*pair) != read_model.key(*other)

    @pytest.mark.parametrize("pair", [("shop", "production"), ("a.b", "c"), ("x" * 63, "y" * 63)])
    def test_every_key_is_a_valid_cloudevents_subject(self, pair):
        key = read_model.key(*pair)
        assert len(key) <= MAX_RELEASE_ID and matches(key, RELEASE_ID)

    def test_the_key_of_an_environment_is_the_same_every_time(self):
        assert read_model.key("a.b", "c") == read_model.key("a.b", "c")
