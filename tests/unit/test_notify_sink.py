"""The local notification receiver (deploy/local/notify_sink.py): what the notifier sends to Slack, Teams or a
webhook on the local stack is kept, one JSON line per message, and a malformed or oversized message is refused."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from releasegate_platform.catalog import Catalog
from releasegate_runtime import secrets
from services.notifier import render
from services.notifier.adapters.secrets import FileSecrets
from services.notifier.domain import Notification
from tests.support.notifier import notification

REPO = Path(__file__).resolve().parents[2]
SINK_FILE = REPO / "deploy" / "local" / "notify_sink.py"
_spec = importlib.util.spec_from_file_location("notify_sink", SINK_FILE)
assert _spec is not None and _spec.loader is not None
sink = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sink)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "notify-sink.jsonl"


@pytest.fixture
async def client(log: Path) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(sink.create_app(log))) as c:
        yield c


def lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def rolled_back() -> Notification:
    return notification(event_id="ev-1", release_id="r-42", url="http://127.0.0.1:18800/releases/r-42")


class TestNotifySink:
    async def test_keeps_a_slack_message_as_the_notifier_renders_it(self, client: TestClient, log: Path) -> None:
        body = render.slack(rolled_back())
        resp = await client.post(
            "/slack/ops",
            data=json.dumps(body),
            headers={"Content-Type": "application/json", render.EVENT_ID_HEADER: "ev-1", "Cookie": "x=y"},
        )
        assert resp.status == 200 and await resp.text() == "ok"
        [kept] = lines(log)
        assert kept["path"] == "/slack/ops" and kept["body"] == body
        assert kept["headers"] == {
            "Content-Type": "application/json",
            render.EVENT_ID_HEADER: "ev-1",
            "User-Agent": kept["headers"]["User-Agent"],
        }
        assert "r-42" in json.dumps(kept["body"]) and kept["at"].endswith("+00:00")

    async def test_keeps_teams_and_signed_webhook_messages_one_line_each(self, client: TestClient, log: Path) -> None:
        n = rolled_back()
        assert (await client.post("/teams/oncall", json=render.teams(n))).status == 200
        signed = render.signature(b"k", 1_700_000_000, render.webhook_body(n))
        resp = await client.post(
            "/webhook/audit", data=render.webhook_body(n), headers={render.SIGNATURE_HEADER: signed}
        )
        assert resp.status == 200
        teams, hook = lines(log)
        assert teams["path"] == "/teams/oncall" and teams["body"]["type"] == "message"
        assert hook["body"]["release_id"] == "r-42" and hook["headers"][render.SIGNATURE_HEADER] == signed

    @pytest.mark.parametrize(
        ("path", "data", "reason"),
        [
            ("/slack/ops", b"not json", "invalid_payload"),
            ("/slack/ops", b"[1, 2]", "invalid_payload"),
            ("/slack/ops", json.dumps({"text": "no blocks"}).encode(), "invalid_blocks"),
            ("/teams/oncall", json.dumps({"text": "hi"}).encode(), "invalid_payload"),
            ("/webhook/audit", b"\xff\xfe", "invalid_payload"),
        ],
    )
    async def test_refuses_what_the_platform_would_refuse_and_keeps_nothing(
        self, client: TestClient, log: Path, path: str, data: bytes, reason: str
    ) -> None:
        resp = await client.post(path, data=data, headers={"Content-Type": "application/json"})
        assert resp.status == 400 and (await resp.text()).startswith(reason)
        assert lines(log) == []

    async def test_refuses_a_body_over_64_kib_with_413(self, client: TestClient, log: Path) -> None:
        big = json.dumps({"blocks": [{"type": "section", "text": "x" * sink.MAX_BODY}]}).encode()
        assert (await client.post("/slack/ops", data=big)).status == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
            for i in range(0, len(big), 8192):
                yield big[i : i + 8192]

        assert (await client.post("/slack/ops", data=chunks())).status == 413
        assert lines(log) == []

    async def test_a_body_of_exactly_64_kib_is_kept(self, client: TestClient, log: Path) -> None:
        head = json.dumps({"blocks": [{"type": "section", "text": ""}]}).encode()
        padded = head[:-4] + b"x" * (sink.MAX_BODY - len(head)) + head[-4:]  # inside the empty text
        assert len(padded) == sink.MAX_BODY
        assert (await client.post("/slack/ops", data=padded)).status == 200
        assert len(lines(log)) == 1

    @pytest.mark.parametrize("path", ["/discord/ops", "/slack/", "/slack/../etc", "/slack/a/b"])
    async def test_only_the_three_platforms_with_a_channel_name_are_routes(
        self, client: TestClient, log: Path, path: str
    ) -> None:
        assert (await client.post(path, json={"blocks": [{}]})).status in (404, 405)
        assert lines(log) == []

    async def test_health_answers_without_writing(self, client: TestClient, log: Path) -> None:
        resp = await client.get("/health")
        assert resp.status == 200 and await resp.json() == {"status": "ok"}
        assert lines(log) == []


class TestLocalSlackRoute:
    def test_the_shops_production_slack_route_reads_the_secret_the_stack_writes(self) -> None:
        [route] = [r for r in Catalog(REPO / "catalog").get("shop").notifications.routes if r.channel == "slack"]
        assert route.secret == str(secrets.NOTIFY_SINK_SECRET)
        assert "production" in route.when.environments and "rolled_back" in route.when.events

    def test_points_the_route_at_the_sink_with_a_file_the_notifier_accepts(self, tmp_path: Path) -> None:
        assert secrets.ensure_notify_sink(tmp_path)
        path = tmp_path / secrets.NOTIFY_SINK_SECRET
        assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
        assert FileSecrets(tmp_path).read(str(secrets.NOTIFY_SINK_SECRET)) == "http://127.0.0.1:19500/slack/ops"
        assert f"http://{sink.DEFAULT_HOST}:{sink.DEFAULT_PORT}/slack/" in secrets.NOTIFY_SINK_URL

    def test_never_replaces_the_operators_own_webhook_url(self, tmp_path: Path) -> None:
        own = tmp_path / secrets.NOTIFY_SINK_SECRET
        own.parent.mkdir(mode=0o700)
        own.write_text("https://hooks.slack.com/services/T0/B0/X\n")
        own.chmod(0o600)
        assert not secrets.ensure_notify_sink(tmp_path)
        assert own.read_text() == "https://hooks.slack.com/services/T0/B0/X\n"
