"""Messages the notifier sends: Slack Block Kit, a Teams Adaptive Card, the signed webhook body, the email."""

from __future__ import annotations

import hashlib
import hmac
import json

from services.notifier import render
from services.notifier.domain import Notification
from tests.support.notifier import notification

N = notification(
    reason="verify-canary-10 failed: <payment_authorization_rate> 0.41 & below 0.85",
    url="http://dash.test/releases/r-1",
)


class TestSlack:
    def test_header_fields_and_a_button_to_the_release_page(self):
        blocks = render.slack(N)["blocks"]
        assert [b["type"] for b in blocks] == ["header", "section", "actions"]
        assert blocks[0]["text"] == {"type": "plain_text", "text": N.title, "emoji": True}
        fields = [f["text"] for f in blocks[1]["fields"]]
        assert fields[:4] == ["*Service*\nshop", "*Version*\nv3", "*Environment*\nproduction", "*State*\nrolled_back"]
        assert blocks[2]["elements"][0]["url"] == "http://dash.test/releases/r-1"

    def test_reason_is_escaped_so_it_cannot_make_links_or_mentions(self):
        reason = render.slack(N)["blocks"][1]["fields"][4]["text"]
        assert reason == "*Reason*\nverify-canary-10 failed: &lt;payment_authorization_rate&gt; 0.41 &amp; below 0.85"

    def test_long_text_is_cut_to_slacks_limits(self):
        long = Notification(**{**N.as_json(), "title": "t" * 400, "reason": "r" * 10_000})
        msg = render.slack(long)
        assert len(msg["blocks"][0]["text"]["text"]) == render.SLACK_HEADER
        assert all(len(f["text"]) <= render.SLACK_FIELD for f in msg["blocks"][1]["fields"])
        assert len(msg["text"]) <= 3000


class TestTeams:
    def test_an_adaptive_card_as_the_one_attachment(self):
        msg = render.teams(N)
        assert msg["type"] == "message"
        (attachment,) = msg["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        card = attachment["content"]
        assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
        assert card["body"][0]["text"] == N.title
        facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
        assert facts == {"Service": "shop", "Version": "v3", "Environment": "production", "State": "rolled_back"}
        assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open release", "url": N.url}]


class TestSignedWebhook:
    def test_signature_is_hmac_sha256_of_timestamp_dot_body(self):
        body = render.webhook_body(N)
        header = render.signature(b"s3cret", 1_700_000_000, body)
        expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
        assert header == f"t=1700000000,v1={expected}"
        assert render.verify(b"s3cret", header, body, now=1_700_000_100)

    def test_a_changed_body_another_key_or_an_old_timestamp_does_not_verify(self):
        body = render.webhook_body(N)
        header = render.signature(b"s3cret", 1_700_000_000, body)
        assert not render.verify(b"s3cret", header, body.replace(b"v3", b"v4"), now=1_700_000_000)
        assert not render.verify(b"other", header, body, now=1_700_000_000)
        assert not render.verify(b"s3cret", header, body, now=1_700_000_301)
        assert not render.verify(b"s3cret", "v1=abc", body, now=1_700_000_000)

    def test_body_is_the_notification(self):
        assert json.loads(render.webhook_body(N)) == N.as_json()


class TestEmail:
    def test_plain_text_and_html_with_the_facts_and_the_link(self):
        msg = render.email(N, "releasegate@example.test", ["ops@example.test", "sre@example.test"])
        assert msg["Subject"] == f"[releasegate] {N.title}"
        assert msg["To"] == "ops@example.test, sre@example.test"
        plain = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert "Environment: production" in plain and N.url in plain
        assert "&lt;payment_authorization_rate&gt;" in html and "<payment" not in html
        assert f'href="{N.url}"' in html

    def test_no_header_injection_through_an_event_field(self):
        evil = Notification(**{**N.as_json(), "title": "x\r\nBcc: victim@example.test"})
        msg = render.email(evil, "releasegate@example.test", ["ops@example.test"])
        assert msg["Bcc"] is None
        assert "\n" not in msg["Subject"]
