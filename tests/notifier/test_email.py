"""The notifier's email channel against a real local SMTP server (aiosmtpd, on a free port): STARTTLS with a
certificate the notifier is configured to trust, authentication from the route's secret file, plain text and HTML
parts; refusals mapped to permanent or retryable failures."""

from __future__ import annotations

import datetime as dt
import email
import ipaddress
import socket
import ssl
from email import policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from releasegate_platform.catalog import NotificationRoute
from services.notifier.adapters.secrets import FileSecrets
from services.notifier.adapters.smtp import SmtpChannel
from services.notifier.domain import DeliveryError
from tests.support.notifier import N


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (cert file, key file)."""
    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return d / "cert.pem", d / "key.pem"


class Mailbox:
    """aiosmtpd handler: keeps each message; answers the scripted codes to DATA first."""

    def __init__(self):
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []
        self.script: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        if self.script:
            return self.script.pop(0)
        message = email.message_from_bytes(envelope.original_content, policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"notifier" and auth_data.password == b"m4il-pass"
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server(certificate):
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    mailbox = Mailbox()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=_free_port(),
        tls_context=server_tls,
        require_starttls=True,
        authenticator=_authenticator,
        auth_require_tls=True,
    )
    controller.start()
    yield controller, mailbox
    controller.stop()


@pytest.fixture
def client_tls(certificate):
    return ssl.create_default_context(cafile=str(certificate[0]))


def email_route(secrets, port, *, credentials="notifier:m4il-pass", tls="starttls") -> NotificationRoute:
    ref = secrets.put("notifier/smtp.credentials", credentials)
    return NotificationRoute(
        name="ops-mail",
        channel="email",
        secret=ref,
        email={
            "host": "127.0.0.1",
            "port": port,
            "tls": tls,
            "sender": "releasegate@shop.test",
            "to": ["ops@shop.test"],
        },
    )


class TestEmail:
    async def test_a_message_with_plain_text_and_html_arrives_over_starttls(self, smtp_server, secrets, client_tls):
        controller, mailbox = smtp_server
        await SmtpChannel(FileSecrets(secrets.root), 5, client_tls).send(email_route(secrets, controller.port), N)
        ((sender, recipients, message),) = mailbox.messages
        assert (sender, recipients) == ("releasegate@shop.test", ["ops@shop.test"])
        assert message["Subject"] == f"[releasegate] {N.title}"
        assert message["X-Releasegate-Event-Id"] == "e-1"
        assert "Environment: production" in message.get_body(("plain",)).get_content()
        assert f'href="{N.url}"' in message.get_body(("html",)).get_content()

    async def test_an_untrusted_certificate_is_refused_and_nothing_is_sent(self, smtp_server, secrets):
        controller, mailbox = smtp_server
        with pytest.raises(DeliveryError) as exc:
            await SmtpChannel(FileSecrets(secrets.root), 5, ssl.create_default_context()).send(
                email_route(secrets, controller.port), N
            )
        assert mailbox.messages == [] and exc.value.retryable

    async def test_wrong_credentials_are_a_permanent_failure(self, smtp_server, secrets, client_tls):
        controller, mailbox = smtp_server
        route = email_route(secrets, controller.port, credentials="notifier:wrong")
        with pytest.raises(DeliveryError, match="authentication refused") as exc:
            await SmtpChannel(FileSecrets(secrets.root), 5, client_tls).send(route, N)
        assert not exc.value.retryable and mailbox.messages == []
        assert "wrong" not in str(exc.value)

    async def test_a_server_that_requires_starttls_refuses_a_plain_route(self, smtp_server, secrets, client_tls):
        controller, mailbox = smtp_server
        route = email_route(secrets, controller.port, tls="none")
        with pytest.raises(DeliveryError):
            await SmtpChannel(FileSecrets(secrets.root), 5, client_tls).send(route, N)
        assert mailbox.messages == []

    @pytest.mark.parametrize(("answer", "retryable"), [("451 try again later", True), ("554 rejected", False)])
    async def test_4xx_is_retryable_and_5xx_permanent(self, smtp_server, secrets, client_tls, answer, retryable):
        controller, mailbox = smtp_server
        mailbox.script = [answer]
        with pytest.raises(DeliveryError, match=answer.split()[0]) as exc:
            await SmtpChannel(FileSecrets(secrets.root), 5, client_tls).send(email_route(secrets, controller.port), N)
        assert exc.value.retryable is retryable and mailbox.messages == []
