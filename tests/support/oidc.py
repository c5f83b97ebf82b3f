"""Access tokens of the local OIDC provider (deploy/oidc) for tests, obtained as a person or a CI pipeline would:
`person_token` signs in through the real authorization-code + PKCE flow (the provider's login form, with the
person's per-machine password), `ci_token` asks for a CI client's token by client_credentials."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from releasegate_runtime.settings import REPO_ROOT, ServiceSettings
from tests.support.services import wait_until

PROVIDER_DIR = REPO_ROOT / "deploy" / "oidc"
DEFAULT_ISSUER = "http://127.0.0.1:19400"
DASHBOARD = "releasegate-dashboard"
DASHBOARD_REDIRECT = "http://127.0.0.1:18800/ui/callback"
PERSON_SCOPE = "openid profile groups api"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_MAX_REDIRECTS = 10


class SignInError(AssertionError):
    """The provider refused or broke the sign-in; the message says at which step."""


def issuer() -> str:
    return os.environ.get("RG_OIDC_ISSUER", DEFAULT_ISSUER).rstrip("/")


def secrets_dir() -> Path:
    return ServiceSettings().secrets_dir


def password(user: str, directory: Path | None = None) -> str:
    return ((directory or secrets_dir()) / "oidc" / f"{user}.password").read_text().strip()


def client_secret(client_id: str, directory: Path | None = None) -> str:
    return ((directory or secrets_dir()) / "oidc" / f"{client_id}.secret").read_text().strip()


async def discovery(http: httpx.AsyncClient, base: str) -> dict:
    response = await http.get(f"{base}/.well-known/openid-configuration")
    response.raise_for_status()
    return response.json()


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def person_token(
    user: str,
    *,
    base: str | None = None,
    directory: Path | None = None,
    user_password: str | None = None,
    client_id: str = DASHBOARD,
    redirect_uri: str = DASHBOARD_REDIRECT,
) -> str:
    """`user`'s access token for the API, by signing in on the provider's login page."""
    base = base or issuer()
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    async with httpx.AsyncClient(timeout=15.0, follow_redirects=False) as http:
        meta = await discovery(http, base)
        response = await http.get(
            meta["authorization_endpoint"],
            params={
                "client_id": client_id,
                "response_type": "code",
                "redirect_uri": redirect_uri,
                "scope": PERSON_SCOPE,
                "state": state,
                "nonce": secrets.token_urlsafe(16),
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
        response = await _follow(http, response, redirect_uri)
        if response.status_code != 200 or not (found := _CSRF.search(response.text)):
            raise SignInError(f"no login form at {response.url} (HTTP {response.status_code}): {response.text[:300]}")
        response = await http.post(
            str(response.url) + "/login",
            data={
                "csrf": found.group(1),
                "username": user,
                "password": user_password if user_password is not None else password(user, directory),
            },
        )
        if response.status_code != 303:
            raise SignInError(f"login of {user} refused (HTTP {response.status_code}): {response.text[:300]}")
        response = await _follow(http, response, redirect_uri)
        if "location" not in response.headers:
            raise SignInError(
                f"no redirect to the client after login (HTTP {response.status_code}): {response.text[:500]}"
            )
        callback = parse_qs(urlsplit(response.headers["location"]).query)
        if "code" not in callback:
            raise SignInError(f"no code at the callback: {callback}")
        if callback.get("state") != [state] or callback.get("iss") != [meta["issuer"]]:
            raise SignInError(f"callback with a foreign state or issuer: {callback}")
        token = await http.post(
            meta["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": callback["code"][0],
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "code_verifier": verifier,
            },
        )
        if token.status_code != 200:
            raise SignInError(f"code exchange refused (HTTP {token.status_code}): {token.text[:300]}")
        return token.json()["access_token"]


async def _follow(http: httpx.AsyncClient, response: httpx.Response, stop_at: str) -> httpx.Response:
    """Follow the provider's redirects until a page, or until the redirect to the client's `stop_at`."""
    for _ in range(_MAX_REDIRECTS):
        if response.status_code not in (302, 303):
            return response
        location = urljoin(str(response.url), response.headers["location"])
        if location.startswith(stop_at):
            return response
        response = await http.get(location)
    raise SignInError(f"more than {_MAX_REDIRECTS} redirects")


async def ci_token(client_id: str, *, base: str | None = None, directory: Path | None = None) -> str:
    """The access token a CI pipeline of `client_id` gets (client_credentials with its per-machine secret)."""
    base = base or issuer()
    async with httpx.AsyncClient(timeout=15.0) as http:
        meta = await discovery(http, base)
        response = await http.post(
            meta["token_endpoint"],
            data={"grant_type": "client_credentials"},
            auth=(client_id, client_secret(client_id, directory)),
        )
        if response.status_code != 200:
            raise SignInError(
                f"client_credentials of {client_id} refused (HTTP {response.status_code}): {response.text}"
            )
        return response.json()["access_token"]


@dataclass
class ProviderProcess:
    """deploy/oidc/server.js as its own OS process on a port of its own, with the secrets of `secrets_dir`."""

    issuer: str
    secrets_dir: Path
    log: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_provider(secrets_dir: Path, log: Path) -> ProviderProcess:
    """Start the provider on a free port; `wait_ready` says when it answers."""
    node = shutil.which("node")
    if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError("node or deploy/oidc/node_modules missing: run `deploy/stack.sh install`")
    issuer_url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "RG_OIDC_ISSUER": issuer_url, "RG_SECRETS_DIR": str(secrets_dir)}
    with log.open("ab") as out:
        proc = subprocess.Popen([node, "server.js"], cwd=PROVIDER_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)
    return ProviderProcess(issuer_url, secrets_dir, log, proc)


async def start_provider(secrets_dir: Path, log: Path, *, timeout: float = 30.0) -> ProviderProcess:
    """Start the provider and wait until its discovery document answers (the provider is another process: its
    readiness can only be polled)."""
    provider = await asyncio.to_thread(spawn_provider, secrets_dir, log)

    async def discovery_answers() -> bool:
        if provider.proc.poll() is not None:
            tail = (await asyncio.to_thread(log.read_text))[-2000:]
            raise RuntimeError(f"the OIDC provider exited ({provider.proc.returncode}): {tail}")
        try:
            return (await http.get(f"{provider.issuer}/.well-known/openid-configuration")).status_code == 200
        except httpx.TransportError:
            return False  # not listening yet

    async with httpx.AsyncClient(timeout=2.0) as http:
        try:
            await wait_until(discovery_answers, timeout, f"the OIDC provider to answer (its log: {log})")
        except BaseException:  # pytest's failure at the deadline included: no provider is left running
            await asyncio.to_thread(provider.stop)
            raise
    return provider
