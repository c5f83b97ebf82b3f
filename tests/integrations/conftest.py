"""The CI integrations' tests: a small HTTP server on a free loopback port plays the releasegate API (and GitHub's
OIDC token endpoint, and a host serving the submit script), recording every request; `run_script` runs the shared
submit script as a CI job would, with nothing of this process's environment but PATH."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
INTEGRATIONS = REPO / "integrations"
SCRIPT = INTEGRATIONS / "scripts" / "releasegate_submit.py"
CANDIDATE = REPO / "examples" / "candidates" / "shop-v2.json"


def jwt(claims: dict[str, Any]) -> str:
    """A JWT-shaped token (the script reads `exp`; the fake API compares whole tokens, so no real signature)."""

    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{secrets.token_urlsafe(32)}"


def release_status(rid: str, history: list[tuple[str, str, str]], *, terminal: bool = False) -> dict[str, Any]:
    """GET /v1/releases/{id}'s answer (the parts the script reads): `history` is the timeline as (state, step,
    reason), oldest first; the release is in the last state."""
    timeline = [
        {"id": n, "at": f"2026-12-01T10:{n:02d}:00Z", "actor": "coordinator", "state": s, "step": st, "reason": r}
        for n, (s, st, r) in enumerate(history, start=1)
    ]
    state, step, _ = history[-1]
    return {
        "release": {
            "release_id": rid,
            "service": "shop",
            "version": "v2",
            "state": state,
            "step": step,
            "terminal": terminal,
        },
        "timeline": timeline,
        "explain": [f"shop v2 ended {state} at {step}."] if terminal else [],
    }


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: bytes


@dataclass
class FakeApi:
    """What the fake answers: the submission, then one status per poll (the last one repeats)."""

    base: str = ""
    release_id: str = field(default_factory=lambda: f"rel-{secrets.token_hex(6)}")
    tokens: set[str] = field(default_factory=set)  # bearer tokens the API accepts now
    submit_answer: tuple[int, dict[str, Any]] | None = None  # default: 202 with the release
    statuses: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # GitHub's OIDC endpoint: the runtime token it wants and the tokens it hands out, one per request
    github_request_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    github_tokens: list[str] = field(default_factory=list)
    script_body: bytes = b""  # what GET /script serves
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests(self, method: str, prefix: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method and s.path.startswith(prefix)]

    def answer(self, seen: Seen) -> tuple[int, dict[str, Any] | bytes]:
        if seen.path == "/script":
            return 200, self.script_body
        if seen.path == "/github/token":
            if seen.authorization != f"bearer {self.github_request_token}":
                return 401, {"message": "bad runtime token"}
            if not self.github_tokens:
                return 500, {"message": "no more tokens"}
            return 200, {"value": self.github_tokens.pop(0)}
        token = (seen.authorization or "").removeprefix("Bearer ")
        if token not in self.tokens:
            return 401, {"detail": "token expired or not issued for releasegate"}
        if seen.method == "POST" and seen.path == "/v1/candidates":
            if self.submit_answer is not None:
                return self.submit_answer
            return 202, {
                "release_id": self.release_id,
                "url": f"/releases/{self.release_id}",
                "status_url": f"/v1/releases/{self.release_id}",
            }
        if seen.method == "GET" and seen.path == f"/v1/releases/{self.release_id}":
            polls = len(self.requests("GET", "/v1/releases/")) - 1
            return self.statuses[min(polls, len(self.statuses) - 1)]
        return 404, {"detail": "Not Found"}


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(self.command, url.path, parse_qs(url.query), self.headers.get("Authorization"), b"")
            seen.body = self.rfile.read(length) if length else b""
            with api.lock:
                api.seen.append(seen)
            status, body = api.answer(seen)
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header(
                "Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json"
            )
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: the tests read what the server received, not its access log."""

    return Handler


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def job_env(**extra: str) -> dict[str, str]:
    """A CI job's environment: PATH and a home, nothing else of this process (no stray GITHUB_ACTIONS)."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8", **extra}


def run_script(env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def fresh_token(ttl: float = 300) -> str:
    return jwt({"iss": "https://ci.example", "aud": "releasegate", "exp": int(time.time() + ttl)})
