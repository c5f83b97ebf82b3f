"""Email over SMTP (aiosmtplib): STARTTLS or implicit TLS unless the route says `none`, credentials from the
route's secret file (`username:password`), plain text and HTML."""

from __future__ import annotations

import ssl

import aiosmtplib

from releasegate_platform.catalog import NotificationRoute
from services.notifier import render
from services.notifier.adapters.secrets import FileSecrets
from services.notifier.domain import DeliveryError, Notification


class SmtpChannel:
    def __init__(self, secrets: FileSecrets, timeout_seconds: float, ssl_context: ssl.SSLContext | None = None):
        self._secrets, self._timeout, self._ssl = secrets, timeout_seconds, ssl_context

    async def send(self, route: NotificationRoute, n: Notification) -> None:
        spec = route.email
        assert spec is not None  # the catalog model requires it for email routes
        username = password = None
        if route.secret is not None:
            username, sep, password = self._secrets.read(route.secret).partition(":")
            if not sep or not username or not password:
                raise DeliveryError(f"secret of route {route.name} is not `username:password`", retryable=False)
        where = f"route {route.name} (email via {spec.host}:{spec.port})"
        try:
            await aiosmtplib.send(
                render.email(n, spec.sender, spec.to),
                hostname=spec.host,
                port=spec.port,
                username=username,
                password=password,
                use_tls=spec.tls == "tls",
                start_tls=spec.tls == "starttls",
                tls_context=self._ssl,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"{where}: authentication refused ({exc.code})", retryable=False) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = ", ".join(str(r.code) for r in exc.recipients)
            raise DeliveryError(f"{where}: recipients refused ({codes})", retryable=False) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"{where}: the server answered {exc.code} {exc.message[:200]}",
                retryable=exc.code >= 400 and exc.code < 500,
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}: {str(exc)[:200]}", retryable=True) from None
