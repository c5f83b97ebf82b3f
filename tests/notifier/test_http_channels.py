"""The notifier's HTTP channels (Slack, Teams, signed webhook) against a real local receiver: the exact payloads,
a signature the receiver can verify, retries of a 5xx through the delivery worker, a 4xx given up at once, and
URLs, redirects, slow and chatty receivers handled without leaking the secret URL."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

import pytest

from contracts import topics
from releasegate_platform.catalog import NotificationRoute
from services.notifier import render
from services.notifier.adapters.http import RESPONSE_LIMIT, HttpChannel
from services.notifier.adapters.secrets import FileSecrets
from services.notifier.domain import DeliveryError, RetryPolicy
from services.notifier.handlers import DeliveryWorker, Notifier
from tests.support.notifier import FakeDeliveries, FakeRoutes, N, status_envelope


def channel(secrets, timeout=5.0) -> HttpChannel:
    return HttpChannel(FileSecrets(secrets.root), timeout)


def route(secrets, kind: str, url: str, **extra) -> NotificationRoute:
    ref = secrets.put(f"notifier/{kind}.url", url)
    return NotificationRoute(name=f"ops-{kind}", channel=kind, secret=ref, **extra)


@pytest.fixture
async def http(secrets):
    c = channel(secrets)
    yield c
    await c.close()


class TestPayloads:
    async def test_slack_receives_the_block_kit_message(self, http, secrets, receiver):
        await http.send(route(secrets, "slack", f"{receiver.base}/services/T0/B0/x"), N)
        (req,) = receiver.requests
        assert req.path == "/services/T0/B0/x"
        assert req.headers["Content-Type"] == "application/json"
        assert json.loads(req.body) == render.slack(N)

    async def test_teams_receives_the_adaptive_card(self, http, secrets, receiver):
        await http.send(route(secrets, "teams", f"{receiver.base}/workflows/abc?sig=1"), N)
        (req,) = receiver.requests
        assert req.path == "/workflows/abc?sig=1"
        assert json.loads(req.body) == render.teams(N)

    async def test_webhook_body_is_signed_and_the_receiver_can_verify_it(self, http, secrets, receiver):
        key = secrets.put("notifier/hook.key", "whsec-test-4f1c")
        r = route(secrets, "webhook", f"{receiver.base}/hooks/releasegate", signing_secret=key)
        before = int(time.time())
        await http.send(r, N)
        (req,) = receiver.requests
        assert json.loads(req.body) == N.as_json()
        assert req.headers["X-Releasegate-Event-Id"] == "e-1"
        header = req.headers["X-Releasegate-Signature"]
        assert render.verify(b"whsec-test-4f1c", header, req.body, now=int(time.time()))
        assert before <= int(header.split(",")[0].removeprefix("t=")) <= int(time.time())
        assert not render.verify(b"another-key", header, req.body, now=int(time.time()))


class TestFailures:
    async def test_a_5xx_is_retried_and_the_second_attempt_delivers(self, secrets, receiver):
        receiver.script = [(500, b"upstream down")]
        now = [datetime.now(UTC)]  # the ledger's clock, moved by the test: no waiting on the wall clock
        ledger = FakeDeliveries(lambda: now[0])
        http = channel(secrets)
        worker = DeliveryWorker(
            deliveries=ledger,
            channel=http,
            policy=RetryPolicy(max_attempts=5, initial=0.05, cap=0.05, jitter=0),
            lease_seconds=30,
            poll_seconds=0.02,
        )
        r = route(secrets, "slack", f"{receiver.base}/hook", when={"events": ["rolled_back"]})
        notifier = Notifier(consumer="notifier", routes=FakeRoutes([r]), deliveries=ledger, api_url="http://d")
        await notifier.on_event(topics.STATUS, status_envelope())
        try:
            for d in await ledger.claim(10, 30):
                await worker.attempt(d)
            (row,) = ledger.rows.values()
            assert row["status"] == "pending" and "HTTP 500: upstream down" in row["error"]
            assert await ledger.claim(10, 30) == []  # not due yet: the retry waits for its backoff
            now[0] = row["due"]  # the backoff has passed
            for d in await ledger.claim(10, 30):
                await worker.attempt(d)
        finally:
            await http.close()
        assert (row["status"], row["attempts"], len(receiver.requests)) == ("delivered", 2, 2)
        assert receiver.requests[0].body == receiver.requests[1].body
        assert ledger.dead_letters == []

    async def test_a_4xx_is_a_permanent_failure_dead_lettered_after_one_request(self, secrets, receiver):
        receiver.script = [(404, b"no such hook")]
        ledger = FakeDeliveries(lambda: datetime.now(UTC))
        http = channel(secrets)
        worker = DeliveryWorker(deliveries=ledger, channel=http, policy=RetryPolicy(), lease_seconds=30)
        r = route(secrets, "teams", f"{receiver.base}/gone")
        await Notifier(consumer="n", routes=FakeRoutes([r]), deliveries=ledger, api_url="http://d").on_event(
            topics.STATUS, status_envelope()
        )
        try:
            for d in await ledger.claim(10, 30):
                await worker.attempt(d)
        finally:
            await http.close()
        assert len(receiver.requests) == 1
        ((source, reason),) = ledger.dead_letters
        assert "permanent failure" in reason and "HTTP 404: no such hook" in reason
        assert receiver.base not in reason and "/gone" not in reason

    @pytest.mark.parametrize(("status", "retryable"), [(429, True), (503, True), (400, False), (410, False)])
    async def test_retryable_or_not_by_status(self, http, secrets, receiver, status, retryable):
        receiver.script = [(status, b"")]
        with pytest.raises(DeliveryError) as exc:
            await http.send(route(secrets, "slack", f"{receiver.base}/x"), N)
        assert exc.value.retryable is retryable

    async def test_a_redirect_is_not_followed(self, http, secrets, receiver):
        receiver.script = [(302, b"")]
        with pytest.raises(DeliveryError, match="HTTP 302") as exc:
            await http.send(route(secrets, "slack", f"{receiver.base}/x"), N)
        assert not exc.value.retryable
        assert [r.path for r in receiver.requests] == ["/x"]

    async def test_a_receiver_that_does_not_answer_in_time_is_retried(self, secrets, receiver):
        receiver.delay = 2.0
        http = channel(secrets, timeout=0.3)
        try:
            with pytest.raises(DeliveryError, match="no answer within 0.3s") as exc:
                await http.send(route(secrets, "slack", f"{receiver.base}/slow"), N)
        finally:
            await http.close()
        assert exc.value.retryable

    async def test_a_huge_answer_is_read_only_up_to_the_limit(self, http, secrets, receiver):
        receiver.script = [(500, b"x" * (RESPONSE_LIMIT * 50))]
        with pytest.raises(DeliveryError) as exc:
            await http.send(route(secrets, "slack", f"{receiver.base}/x"), N)
        assert len(str(exc.value)) < 400

    async def test_an_unreachable_receiver_is_retried_without_naming_its_url(self, http, secrets):
        with pytest.raises(DeliveryError) as exc:
            await http.send(route(secrets, "slack", "http://127.0.0.1:9/secret-token-path"), N)
        assert exc.value.retryable and "secret-token-path" not in str(exc.value)


class TestUrlsAndSecrets:
    @pytest.mark.parametrize(
        ("url", "why"),
        [
            ("ftp://{hp}/x", "must be http(s)"),
            ("file:///etc/passwd", "must be http(s)"),
            ("http://user:pass@{hp}/x", "user info"),
            ("http://@{hp}/x", "user info"),
            ("http:///nohost", "no host"),
            ("http://127.0.0.1:99999/x", "not a valid URL"),
        ],
    )
    async def test_a_bad_url_is_refused_before_anything_is_sent(self, http, secrets, receiver, url, why):
        with pytest.raises(DeliveryError, match=re.escape(why)) as exc:
            await http.send(route(secrets, "slack", url.format(hp=receiver.base.removeprefix("http://"))), N)
        assert not exc.value.retryable and receiver.requests == []
        assert "pass" not in str(exc.value).replace("passwd", "")

    async def test_a_missing_secret_is_a_permanent_failure_naming_the_reference(self, http, secrets, receiver):
        r = NotificationRoute(name="ops", channel="slack", secret="notifier/missing.url")
        with pytest.raises(DeliveryError, match="notifier/missing.url") as exc:
            await http.send(r, N)
        assert not exc.value.retryable and receiver.requests == []

    async def test_a_secret_others_can_read_is_refused(self, http, secrets, receiver):
        r = route(secrets, "slack", f"{receiver.base}/x")
        (secrets.root / r.secret).chmod(0o644)
        with pytest.raises(DeliveryError, match="readable by others"):
            await http.send(r, N)
        assert receiver.requests == []

    async def test_a_symlink_out_of_the_secrets_folder_is_refused(self, http, secrets, receiver, tmp_path):
        outside = tmp_path / "outside.url"
        outside.write_text(f"{receiver.base}/x")
        outside.chmod(0o600)
        (secrets.root / "notifier").mkdir(parents=True, exist_ok=True)
        (secrets.root / "notifier" / "link.url").symlink_to(outside)
        r = NotificationRoute(name="ops", channel="slack", secret="notifier/link.url")
        with pytest.raises(DeliveryError, match="outside the secrets folder"):
            await http.send(r, N)
        assert receiver.requests == []
