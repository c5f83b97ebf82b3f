"""Message shapes, pure: Slack Block Kit, a Teams Adaptive Card, the signed webhook body and the email, all from one
`Notification`. Free text is cut to each platform's limits and escaped for its markup."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
from email.message import EmailMessage

from services.notifier.domain import Notification

SIGNATURE_HEADER = "X-Releasegate-Signature"
EVENT_ID_HEADER = "X-Releasegate-Event-Id"
# Slack: header text ≤ 150, a section field ≤ 2000, fallback text ≤ 3000 (we stay well below)
SLACK_HEADER = 150
SLACK_FIELD = 2000
REASON = 1500
_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}
_TEAMS_COLOR = {"critical": "Attention", "warning": "Warning", "info": "Good"}


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _facts(n: Notification) -> list[tuple[str, str]]:
    return [
        ("Service", n.service),
        ("Version", n.version or "unknown"),
        ("Environment", n.environment or "unknown"),
        ("State", n.state or f"{n.kind} ({n.severity})"),
        ("Reason", cut(n.reason, REASON)),
    ]


def _mrkdwn(text: str) -> str:
    """Slack's escaping: only &, < and > (otherwise `<url|text>` in a reason would become a link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(n: Notification) -> dict:
    """An incoming-webhook message: a header, the facts as section fields, a button to the release page."""
    return {
        "text": cut(f"{n.title}: {n.reason}", 3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": cut(n.title, SLACK_HEADER), "emoji": True}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"{_EMOJI.get(n.severity, '')} *{_mrkdwn(n.kind)}*".strip()},
                "fields": [
                    {"type": "mrkdwn", "text": cut(f"*{name}*\n{_mrkdwn(value)}", SLACK_FIELD)}
                    for name, value in _facts(n)
                ],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open release"},
                        "url": n.url,
                        "action_id": "open-release",
                    }
                ],
            },
        ],
    }


def teams(n: Notification) -> dict:
    """The message Teams incoming webhooks and Workflows ("post to a channel when a webhook request is received")
    accept: an Adaptive Card as the one attachment."""
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "TextBlock",
                "text": n.title,
                "size": "Large",
                "weight": "Bolder",
                "color": _TEAMS_COLOR.get(n.severity, "Default"),
                "wrap": True,
            },
            {"type": "FactSet", "facts": [{"title": name, "value": value} for name, value in _facts(n)[:4]]},
            {"type": "TextBlock", "text": cut(n.reason, REASON), "wrap": True},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": "Open release", "url": n.url}],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def webhook_body(n: Notification) -> bytes:
    """The generic webhook's JSON body: the notification as it is stored (docs/notifications.md)."""
    return json.dumps(n.as_json(), separators=(",", ":"), sort_keys=True).encode()


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex>`: HMAC-SHA256 of `<timestamp>.<body>` (Stripe's scheme: the timestamp is signed too, so
    a receiver can refuse an old request replayed)."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, now: int, tolerance: int = 300) -> bool:
    """What a receiver does with the header (the docs show the same in a few lines)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, timestamp, body).split(",v1=", 1)[1]
    return abs(now - timestamp) <= tolerance and hmac.compare_digest(expected, parts.get("v1", ""))


def _header_text(text: str) -> str:
    """Header values from event fields: no line breaks (header injection) and a sane length."""
    return cut(" ".join(text.split()), 200)


def email(n: Notification, sender: str, to: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = _header_text(f"[releasegate] {n.title}")
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["X-Releasegate-Event-Id"] = _header_text(n.event_id)
    facts = _facts(n)
    plain = "\n".join([n.title, "", *(f"{name}: {value}" for name, value in facts), "", f"Release: {n.url}"])
    msg.set_content(plain + "\n")
    rows = "".join(
        f"<tr><th align='left'>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>" for name, value in facts
    )
    msg.add_alternative(
        f"<html><body><h2>{html.escape(n.title)}</h2><table>{rows}</table>"
        f'<p><a href="{html.escape(n.url, quote=True)}">Open release</a></p></body></html>\n',
        subtype="html",
    )
    return msg
