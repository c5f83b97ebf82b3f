"""The CLI over the releasegate API (`--api URL`): no database or Kafka credentials, only an OIDC access token —
a person's from `releasegate login`, or a CI job's (RG_API_TOKEN). The API checks the token and the person's
rights; operator commands are signed by the API for the person it authenticated."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import webbrowser
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

TOKEN_FILE = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "releasegate" / "token"
CLI_CLIENT = "releasegate-cli"
CLI_REDIRECT_PORT = 18899
SCOPE = "openid profile groups api"


class ApiError(Exception):
    """The API refused or could not be reached; the message is the API's reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def token(token_file: Path | None = None) -> str:
    """RG_API_TOKEN, else the token file `releasegate login` wrote."""
    env = os.environ.get("RG_API_TOKEN")
    if env:
        return env.strip()
    path = token_file or TOKEN_FILE
    try:
        return path.read_text().strip()
    except OSError:
        raise ApiError(f"no token: run `releasegate --api URL login`, or set RG_API_TOKEN (no file {path})") from None


class Api:
    def __init__(self, url: str, bearer: str, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, headers={"Authorization": f"Bearer {bearer}"}, follow_redirects=False
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:300]
            raise ApiError(f"{response.status_code}: {detail}", response.status_code)
        return response.json()

    def submit(self, candidate: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/candidates", json=candidate))

    def releases(self, limit: int = 20) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/releases", params={"limit": limit}))

    def release(self, release_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/releases/{release_id}"))

    def act(self, release_id: str, action: str, reason: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/releases/{release_id}/actions/{action}", json={"reason": reason}))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", path, json=body))

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def events(self, release_id: str) -> Iterator[dict[str, Any]]:
        """The release's status changes as they happen (server-sent events)."""
        with self._http.stream("GET", f"/v1/releases/{release_id}/events", timeout=None) as response:
            if response.status_code >= 400:
                raise ApiError(f"{response.status_code}: live updates refused", response.status_code)
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line[6:])


def login(issuer: str, *, open_browser: bool = True, token_file: Path | None = None) -> Path:
    """Sign in as a person: authorization code + PKCE with a one-shot listener on 127.0.0.1:18899 for the
    redirect; the access token is written owner-only to `token_file`."""
    meta = httpx.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration", timeout=10).json()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    redirect = f"http://127.0.0.1:{CLI_REDIRECT_PORT}/callback"
    got: dict[str, str] = {}

    class Callback(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            got.update({k: v[0] for k, v in query.items()})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"releasegate: signed in, you can close this tab.\n")

        def log_message(self, *_: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", CLI_REDIRECT_PORT), Callback)
    listener = threading.Thread(target=server.handle_request, daemon=True)
    listener.start()
    url = f"{meta['authorization_endpoint']}?" + urlencode(
        {
            "client_id": CLI_CLIENT,
            "response_type": "code",
            "scope": SCOPE,
            "redirect_uri": redirect,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    print(f"Sign in at: {url}")
    if open_browser:
        webbrowser.open(url)
    listener.join(timeout=300)
    server.server_close()
    if got.get("state") != state or "code" not in got:
        raise ApiError(f"sign-in failed: {got.get('error_description') or got.get('error') or 'no code came back'}")
    answer = httpx.post(
        meta["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": got["code"],
            "redirect_uri": redirect,
            "client_id": CLI_CLIENT,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    if answer.status_code != 200:
        raise ApiError(f"token exchange refused: {answer.text[:300]}")
    path = token_file or TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(answer.json()["access_token"])
    return path
