"""Slack, Teams and generic webhooks over HTTP(S). The URL is a secret (a Slack or Teams webhook URL is its own
credential): it is validated before use and never appears in an error or a log line. No redirects are followed,
an attempt has one deadline, and at most `RESPONSE_LIMIT` bytes of an answer are read."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from releasegate_platform.catalog import NotificationRoute
from services.notifier import render
from services.notifier.adapters.secrets import FileSecrets
from services.notifier.domain import DeliveryError, Notification

RESPONSE_LIMIT = 16 * 1024
# answers worth another attempt: the receiver may be overloaded or restarting
RETRYABLE_STATUS = frozenset({408, 425, 429})


def checked_url(url: str, what: str) -> str:
    """An http(s) URL with a host and no user info (credentials in a URL end up in proxies' logs)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise DeliveryError(f"{what} is not a valid URL", retryable=False) from None
    if parts.scheme not in {"http", "https"}:
        raise DeliveryError(f"{what} must be http(s), not {parts.scheme[:10]!r}", retryable=False)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise DeliveryError(f"{what} must not carry user info", retryable=False)
    if not parts.hostname or any(c.isspace() or ord(c) < 0x20 for c in url):
        raise DeliveryError(f"{what} has no host or contains whitespace", retryable=False)
    return url


class HttpChannel:
    def __init__(
        self,
        secrets: FileSecrets,
        timeout_seconds: float,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secrets, self._timeout, self._ssl, self._clock = secrets, timeout_seconds, ssl_context, clock
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True, limit=32),
                headers={"User-Agent": "releasegate-notifier"},
            )
        return self._session

    async def send(self, route: NotificationRoute, n: Notification) -> None:
        what = f"the {route.channel} URL of route {route.name}"
        assert route.secret is not None  # the catalog model requires it for HTTP channels
        url = checked_url(self._secrets.read(route.secret), what)
        headers = {"Content-Type": "application/json", render.EVENT_ID_HEADER: n.event_id}
        if route.channel == "slack":
            body = json.dumps(render.slack(n)).encode()
        elif route.channel == "teams":
            body = json.dumps(render.teams(n)).encode()
        else:
            assert route.signing_secret is not None
            key = self._secrets.read(route.signing_secret).encode()
            body = render.webhook_body(n)
            headers[render.SIGNATURE_HEADER] = render.signature(key, int(self._clock()), body)
        await self._post(url, body, headers, route)

    async def _post(self, url: str, body: bytes, headers: dict[str, str], route: NotificationRoute) -> None:
        where = f"route {route.name} ({route.channel})"
        try:
            async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as resp:
                answer = await resp.content.read(RESPONSE_LIMIT)
                status = resp.status
        except TimeoutError:
            raise DeliveryError(f"{where}: no answer within {self._timeout:g}s", retryable=True) from None
        except aiohttp.ClientError as exc:
            # aiohttp's messages may quote the URL; only the error's kind is kept
            raise DeliveryError(f"{where}: {type(exc).__name__} reaching the receiver", retryable=True) from None
        if 200 <= status < 300:
            return
        text = " ".join(answer.decode("utf-8", "replace").split())[:200]
        reason = f"{where}: the receiver answered HTTP {status}" + (f": {text}" if text else "")
        raise DeliveryError(reason, retryable=status >= 500 or status in RETRYABLE_STATUS)
