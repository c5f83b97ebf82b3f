"""The Channel port over every kind of route: email over SMTP, the rest over HTTP."""

from __future__ import annotations

from releasegate_platform.catalog import NotificationRoute
from services.notifier.adapters.http import HttpChannel
from services.notifier.adapters.smtp import SmtpChannel
from services.notifier.domain import Notification


class Channels:
    def __init__(self, http: HttpChannel, smtp: SmtpChannel) -> None:
        self._http, self._smtp = http, smtp

    async def send(self, route: NotificationRoute, n: Notification) -> None:
        await (self._smtp if route.channel == "email" else self._http).send(route, n)
