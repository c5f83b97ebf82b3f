#!/usr/bin/env python3
"""Submit a release candidate to the releasegate API with a short-lived CI token, then watch the release to its end.

Standard library only, so it runs on any CI runner with python3: the GitHub Action (integrations/github-actions) and
the GitLab CI template (integrations/gitlab) both run this file, and so can a laptop.

Configuration, from the environment:
  RELEASEGATE_API_URL          the API, e.g. https://releasegate.example.com (http only to a loopback address)
  RELEASEGATE_CANDIDATE        path of the candidate JSON
  RELEASEGATE_WATCH            true (default): wait for the outcome; false: stop once the candidate is accepted
  RELEASEGATE_TIMEOUT_MINUTES  how long to watch (default 60); the release itself carries on afterwards
  RELEASEGATE_POLL_SECONDS     between two status requests (default 10)
  RELEASEGATE_AUDIENCE         audience of the token requested from GitHub Actions (default releasegate)
  RELEASEGATE_DOTENV           optional file to write RELEASEGATE_RELEASE_ID/_URL/_STATE to (a GitLab dotenv report)
The token: the first source present is used, and asked again when the token is about to expire or the API answers
401 (a literal token cannot be renewed):
  RELEASEGATE_TOKEN_COMMAND    a shell command printing a token
  RELEASEGATE_TOKEN_FILE       a file holding a token (re-read each time)
  ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN   GitHub Actions' OIDC token endpoint
  RELEASEGATE_ID_TOKEN         GitLab CI's `id_tokens` variable
  RELEASEGATE_TOKEN            a token
On GitHub Actions it also sets the step outputs release-id, release-url and state, and writes a job summary.

Exit status: 0 promoted (or accepted, when not watching); 1 the release ended in any other state (rolled back,
aborted, refused by a gate...); 2 bad configuration; 3 the API or the token issuer refused the request;
4 still running when the watch timed out; 5 the API or the token issuer could not be reached or failed.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

USER_AGENT = "releasegate-submit/1"
REQUEST_TIMEOUT_S = 30.0
RENEW_MARGIN_S = 30.0  # ask for a new token this long before the old one expires
SUBMIT_ATTEMPTS = 3  # only when nothing reached the API (connection refused, 503): a retry cannot submit twice

EXIT_PROMOTED, EXIT_NOT_PROMOTED, EXIT_CONFIG, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_UNAVAILABLE = range(6)


class Failure(Exception):
    """Ends the run with a message and an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class HttpError(Exception):
    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


def on_github() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def say(message: str) -> None:
    print(f"releasegate: {message}", flush=True)


def warn(message: str) -> None:
    print(f"::warning::releasegate: {message}" if on_github() else f"releasegate: warning: {message}", flush=True)


def detail_of(body: bytes) -> str:
    """The API's explanation from an error body: FastAPI's {"detail": ...}, else the body's start."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:500] or "(no detail)"
    detail = doc.get("detail", doc) if isinstance(doc, dict) else doc
    if isinstance(detail, list):  # request validation errors: one line each
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{where}: {item.get('msg', item)}" if where else str(item.get("msg", item)))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return detail if isinstance(detail, str) else json.dumps(detail)


def http(method: str, url: str, *, headers: dict[str, str], body: bytes | None = None) -> Any:
    """One request; the decoded JSON answer, HttpError for an HTTP error, OSError when nothing answered."""
    request = urllib.request.Request(url, data=body, method=method, headers={"User-Agent": USER_AGENT, **headers})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        raise HttpError(
            exc.code,
            detail_of(exc.read()),
            float(retry_after) if retry_after and retry_after.isdigit() else None,
        ) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise reason if isinstance(reason, OSError) else OSError(str(reason)) from None
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise HttpError(200, f"not JSON: {raw[:200]!r}") from None


def jwt_expiry(token: str) -> float | None:
    """The `exp` of a JWT (read, not verified: the API verifies), or None for anything else."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, (int, float)) else None


@dataclass
class TokenSource:
    """Where tokens come from, and the current one. Renewable sources are asked again near expiry or after a 401."""

    describe: str
    fetch: Callable[[], str]
    renewable: bool
    _token: str | None = field(default=None, repr=False)
    _expires: float | None = None

    def get(self) -> str:
        if self._token is None or (self.renewable and self._expires and self._expires - time.time() < RENEW_MARGIN_S):
            self._set(self.fetch())
        if not self.renewable and self._expires and self._expires <= time.time():
            raise Failure(
                f"the token from {self.describe} expired and cannot be renewed: use RELEASEGATE_TOKEN_COMMAND or "
                "RELEASEGATE_TOKEN_FILE, or a longer-lived token",
                EXIT_REFUSED,
            )
        assert self._token is not None
        return self._token

    def renew(self) -> bool:
        """After a 401: a new token if the source can give one; False if it cannot."""
        if not self.renewable:
            return False
        self._set(self.fetch())
        return True

    def _set(self, token: str) -> None:
        token = token.strip()
        if not token:
            raise Failure(f"{self.describe} gave an empty token", EXIT_REFUSED)
        if on_github():
            print(f"::add-mask::{token}", flush=True)  # the runner hides it in every later log line
        self._token = token
        self._expires = jwt_expiry(token)


def token_source(env: dict[str, str]) -> TokenSource:
    if command := env.get("RELEASEGATE_TOKEN_COMMAND"):

        def run_command() -> str:
            done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                # its stderr, never its stdout: a failing command may still have printed a token
                raise Failure(
                    f"RELEASEGATE_TOKEN_COMMAND failed (exit {done.returncode}): {done.stderr.strip()[-500:]}",
                    EXIT_UNAVAILABLE,
                )
            return done.stdout

        return TokenSource("RELEASEGATE_TOKEN_COMMAND", run_command, renewable=True)
    if path := env.get("RELEASEGATE_TOKEN_FILE"):

        def read_file() -> str:
            try:
                with open(path, encoding="utf-8") as f:
                    return f.read()
            except OSError as exc:
                raise Failure(f"cannot read RELEASEGATE_TOKEN_FILE {path}: {exc.strerror}", EXIT_CONFIG) from None

        return TokenSource(f"RELEASEGATE_TOKEN_FILE ({path})", read_file, renewable=True)
    request_url, request_token = env.get("ACTIONS_ID_TOKEN_REQUEST_URL"), env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if request_url and request_token:
        audience = env.get("RELEASEGATE_AUDIENCE") or "releasegate"
        sep = "&" if "?" in request_url else "?"
        url = f"{request_url}{sep}audience={urllib.parse.quote(audience, safe='')}"

        def github_oidc() -> str:
            try:
                answer = http("GET", url, headers={"Authorization": f"bearer {request_token}"})
            except HttpError as exc:
                raise Failure(
                    f"GitHub's OIDC token endpoint refused (HTTP {exc.status}): {exc.detail}", EXIT_REFUSED
                ) from None
            except OSError as exc:
                raise Failure(f"GitHub's OIDC token endpoint unreachable: {exc}", EXIT_UNAVAILABLE) from None
            value = answer.get("value") if isinstance(answer, dict) else None
            if not isinstance(value, str):
                raise Failure("GitHub's OIDC token endpoint answered without a token", EXIT_UNAVAILABLE)
            return value

        return TokenSource(f"GitHub Actions OIDC (audience {audience})", github_oidc, renewable=True)
    for name in ("RELEASEGATE_ID_TOKEN", "RELEASEGATE_TOKEN"):
        if value := env.get(name):
            return TokenSource(name, lambda value=value: value, renewable=False)
    if on_github():
        hint = "the job needs `permissions: id-token: write` so that GitHub hands out an OIDC token"
    elif env.get("GITLAB_CI") == "true":
        hint = "the job needs `id_tokens: RELEASEGATE_ID_TOKEN: {aud: releasegate}`"
    else:
        hint = "set RELEASEGATE_TOKEN_COMMAND, RELEASEGATE_TOKEN_FILE or RELEASEGATE_TOKEN"
    raise Failure(f"no token: {hint}", EXIT_CONFIG)


def api_base(raw: str) -> str:
    url = urllib.parse.urlsplit(raw.strip())
    if url.scheme not in ("http", "https") or not url.hostname:
        raise Failure(f"RELEASEGATE_API_URL must be an http(s) URL, got {raw!r}", EXIT_CONFIG)
    if url.scheme == "http" and not is_loopback(url.hostname):
        raise Failure(
            "RELEASEGATE_API_URL: the token may travel over plain http only to a loopback address", EXIT_CONFIG
        )
    return raw.strip().rstrip("/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Config:
    api: str
    candidate_path: str
    candidate: bytes
    watch: bool
    timeout_s: float
    poll_s: float
    dotenv: str | None


def flag(env: dict[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise Failure(f"{name} must be true or false, got {value!r}", EXIT_CONFIG)


def number(env: dict[str, str], name: str, default: float) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        parsed = float(value)
    except ValueError:
        raise Failure(f"{name} must be a number, got {value!r}", EXIT_CONFIG) from None
    if parsed <= 0:
        raise Failure(f"{name} must be positive, got {value!r}", EXIT_CONFIG)
    return parsed


def load_config(env: dict[str, str]) -> Config:
    api = env.get("RELEASEGATE_API_URL", "")
    if not api:
        raise Failure("RELEASEGATE_API_URL is not set", EXIT_CONFIG)
    path = env.get("RELEASEGATE_CANDIDATE", "")
    if not path:
        raise Failure("RELEASEGATE_CANDIDATE is not set (the path of the candidate JSON)", EXIT_CONFIG)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise Failure(f"cannot read the candidate {path}: {exc.strerror}", EXIT_CONFIG) from None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise Failure(f"the candidate {path} is not JSON: {exc}", EXIT_CONFIG) from None
    if not isinstance(doc, dict):
        raise Failure(f"the candidate {path} is not a JSON object", EXIT_CONFIG)
    return Config(
        api=api_base(api),
        candidate_path=path,
        candidate=raw,
        watch=flag(env, "RELEASEGATE_WATCH", True),
        timeout_s=number(env, "RELEASEGATE_TIMEOUT_MINUTES", 60) * 60,
        poll_s=number(env, "RELEASEGATE_POLL_SECONDS", 10),
        dotenv=env.get("RELEASEGATE_DOTENV") or None,
    )


class Api:
    """The two calls this script makes, with the token attached and renewed after a 401."""

    def __init__(self, base: str, tokens: TokenSource) -> None:
        self.base = base
        self.tokens = tokens

    def call(self, method: str, path: str, body: bytes | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            headers["Authorization"] = f"Bearer {self.tokens.get()}"
            try:
                return http(method, self.base + path, headers=headers, body=body)
            except HttpError as exc:
                if exc.status == 401 and attempt == 1 and self.tokens.renew():
                    continue
                raise
        raise AssertionError("unreachable")

    def submit(self, candidate: bytes) -> dict[str, Any]:
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                answer = self.call("POST", "/v1/candidates", candidate)
                break
            except HttpError as exc:
                if exc.status == 503 and attempt < SUBMIT_ATTEMPTS:
                    warn(f"the API is unavailable ({exc.detail}); trying again")
                    time.sleep(exc.retry_after or 2.0 * attempt)
                    continue
                raise refused("submitting the candidate", exc) from None
            except ConnectionRefusedError as exc:
                if attempt < SUBMIT_ATTEMPTS:
                    warn(f"the API refused the connection ({exc}); trying again")
                    time.sleep(2.0 * attempt)
                    continue
                raise Failure(f"the API at {self.base} is unreachable: {exc}", EXIT_UNAVAILABLE) from None
            except OSError as exc:
                # the request may have reached the API: trying again could submit the candidate twice
                raise Failure(f"submitting the candidate to {self.base} failed: {exc}", EXIT_UNAVAILABLE) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("release_id"), str) or not answer["release_id"]:
            raise Failure(f"the API accepted the candidate but named no release: {answer!r}", EXIT_UNAVAILABLE)
        return answer

    def release(self, release_id: str) -> dict[str, Any]:
        answer = self.call("GET", f"/v1/releases/{urllib.parse.quote(release_id, safe='')}")
        if not isinstance(answer, dict) or not isinstance(answer.get("release"), dict):
            raise HttpError(200, "the release's status has no `release` object")
        return answer


def refused(doing: str, exc: HttpError) -> Failure:
    if exc.status == 401:
        return Failure(
            f"{doing}: the API did not accept the token (HTTP 401: {exc.detail}); check the token's issuer and "
            "audience against the API's configuration",
            EXIT_REFUSED,
        )
    if exc.status == 403:
        return Failure(f"{doing}: refused (HTTP 403): {exc.detail}", EXIT_REFUSED)
    if exc.status >= 500:
        return Failure(f"{doing}: the API failed (HTTP {exc.status}): {exc.detail}", EXIT_UNAVAILABLE)
    return Failure(f"{doing}: HTTP {exc.status}: {exc.detail}", EXIT_REFUSED)


def final_reason(status: dict[str, Any]) -> str:
    """Why the release ended: the newest timeline entry that gives a reason."""
    for entry in reversed(status.get("timeline") or []):
        if isinstance(entry, dict) and entry.get("reason"):
            return str(entry["reason"])
    return "(the release gives no reason)"


UNKNOWN_GRACE_S = 60.0


def watch(api: Api, release_id: str, timeout_s: float, poll_s: float) -> dict[str, Any]:
    """Poll the release until it is terminal; print each new timeline entry on the way."""
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    last_problem = ""
    # the API accepted the candidate once the broker had it; the release is known once the coordinator read it
    known_by = time.monotonic() + UNKNOWN_GRACE_S
    known = False
    while True:
        try:
            status = api.release(release_id)
            last_problem = ""
            known = True
        except HttpError as exc:
            if exc.status == 404 and not known and time.monotonic() < known_by:
                status, problem = None, "not known yet (the coordinator has not read it)"
            elif exc.status in (401, 403, 404):
                raise refused(f"reading release {release_id}", exc) from None
            else:
                problem = f"HTTP {exc.status}: {exc.detail}"
                status = None
        except OSError as exc:
            problem = f"unreachable: {exc}"
            status = None
        if status is None:
            if problem != last_problem:
                warn(f"status of release {release_id}: {problem}; still watching")
            last_problem = problem
        else:
            for entry in status.get("timeline") or []:
                if not isinstance(entry, dict):
                    continue
                key = str(entry.get("id") or (entry.get("at"), entry.get("state"), entry.get("step")))
                if key in seen:
                    continue
                seen.add(key)
                step = f" [{entry['step']}]" if entry.get("step") else ""
                reason = f": {entry['reason']}" if entry.get("reason") else ""
                say(f"{entry.get('at', '')} {entry.get('state', '?')}{step}{reason}")
            if status["release"].get("terminal") is True:
                return status
        if time.monotonic() + poll_s > deadline:
            state = status["release"].get("state", "?") if status else "unknown"
            raise Failure(
                f"release {release_id} is still {state} after {timeout_s / 60:g} minutes; it carries on without "
                "this job (watch it on the dashboard)",
                EXIT_TIMEOUT,
            )
        time.sleep(poll_s)


def write_outputs(env: dict[str, str], cfg: Config, values: dict[str, str]) -> None:
    if path := env.get("GITHUB_OUTPUT"):
        with open(path, "a", encoding="utf-8") as f:
            for name, value in values.items():
                f.write(f"{name}={one_line(value)}\n")
    if cfg.dotenv:
        with open(cfg.dotenv, "w", encoding="utf-8") as f:
            for name, value in values.items():
                f.write(f"RELEASEGATE_{name.upper().replace('-', '_')}={one_line(value)}\n")


def one_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


def md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def summary(env: dict[str, str], release_id: str, url: str, status: dict[str, Any] | None, outcome: str) -> None:
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    release = (status or {}).get("release", {})
    lines = [
        f"### releasegate: {md(release.get('service', ''))} {md(release.get('version', ''))} — {md(outcome)}",
        "",
        "| release | state | step | reason |",
        "| --- | --- | --- | --- |",
        f"| [{md(release_id)}]({url}) | {md(release.get('state', 'submitted'))} | {md(release.get('step') or '')} | "
        f"{md(final_reason(status) if status else '')} |",
        "",
    ]
    lines += [f"- {md(sentence)}" for sentence in (status or {}).get("explain") or []]
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def run(env: dict[str, str]) -> int:
    cfg = load_config(env)
    api = Api(cfg.api, token_source(env))
    say(f"submitting {cfg.candidate_path} to {cfg.api}")
    answer = api.submit(cfg.candidate)
    release_id = answer["release_id"]
    url = urllib.parse.urljoin(cfg.api + "/", str(answer.get("url") or f"/releases/{release_id}"))
    say(f"release {release_id}: {url}")
    write_outputs(env, cfg, {"release-id": release_id, "release-url": url})
    if not cfg.watch:
        summary(env, release_id, url, None, "submitted")
        return EXIT_PROMOTED
    status = watch(api, release_id, cfg.timeout_s, cfg.poll_s)
    state = str(status["release"].get("state", "?"))
    reason = final_reason(status)
    write_outputs(env, cfg, {"release-id": release_id, "release-url": url, "state": state})
    summary(env, release_id, url, status, state)
    say(f"final state: {state}")
    say(f"reason: {reason}")
    for sentence in status.get("explain") or []:
        say(f"  {sentence}")
    if state == "promoted":
        return EXIT_PROMOTED
    if on_github():
        print(f"::error title=releasegate::release {release_id} ended {state}: {one_line(reason)}", flush=True)
    return EXIT_NOT_PROMOTED


def main() -> int:
    try:
        return run(dict(os.environ))
    except Failure as exc:
        prefix = "::error title=releasegate::" if on_github() else "releasegate: error: "
        print(f"{prefix}{one_line(str(exc))}", file=sys.stderr, flush=True)
        return exc.status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
