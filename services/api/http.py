"""The API's HTTP surface (FastAPI): read models, live updates, operator commands and the CI ingress, all behind
OIDC bearer tokens; the dashboard's pages and assets. Built from ports (`Ports`), so that the handlers are tested
with fakes and the service with the real provider, database and broker."""

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import structlog
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError

from contracts.events import (
    CandidateSubmitted,
    FollowupAdded,
    FollowupClosed,
    FollowupKind,
    FollowupNumber,
    FollowupSeverity,
    FollowupTitle,
)
from contracts.names import MAX_RELEASE_ID, NAME, RELEASE_ID
from releasegate_platform import change_record, change_record_html
from releasegate_platform.oidc import Claims, ProviderError, TokenError
from services.api import access, ci
from services.api.access import ACTIONS, Action, Person, ReleaseRules
from services.api.live import StatusHub, TooManyClients, sse
from services.api.read_models import ReadModels
from services.api.records import Records

log = structlog.get_logger()
STATIC = Path(__file__).resolve().parent / "static"
HEARTBEAT_SECONDS = 15.0
MAX_CANDIDATE_BYTES = 256 * 1024
_NAME = re.compile(NAME)
_RELEASE_ID = re.compile(RELEASE_ID)


class Verifier(Protocol):
    async def verify(self, token: str) -> Claims: ...


class CommandPort(Protocol):
    async def give(self, action: Action, release_id: str, person: Person, reason: str) -> str: ...

    async def followup(self, command: FollowupAdded | FollowupClosed, person: Person) -> str:
        """Publish an incident follow-up command for `person` (signed by the API, the login attested)."""

    async def submit(self, candidate: CandidateSubmitted) -> str: ...


@dataclass
class Ports:
    read_models: ReadModels
    commands: CommandPort
    tokens: Verifier
    ci_trust: Callable[[], Mapping[str, tuple[ci.CiTrust, ...]]]
    approver_groups: Callable[[], frozenset[str]]
    calendar: Callable[[], Awaitable[dict[str, Any]]]
    hub: StatusHub
    issuer: str
    public_url: str
    dashboard_client: str
    audience: str
    records: Records | None = None  # None: no records key installed (the record routes answer 503)

    @classmethod
    def unwired(cls) -> "Ports":
        """Ports that refuse every call: enough to describe the app (its OpenAPI document)."""

        def refuse(*_: Any, **__: Any) -> Any:
            raise RuntimeError("unwired")

        return cls(
            read_models=refuse,  # type: ignore[arg-type]
            commands=refuse,  # type: ignore[arg-type]
            tokens=refuse,  # type: ignore[arg-type]
            ci_trust=refuse,
            approver_groups=refuse,
            calendar=refuse,
            hub=StatusHub(),
            issuer="https://issuer.example",
            public_url="https://releasegate.example",
            dashboard_client="releasegate-dashboard",
            audience="releasegate",
        )


class ActionBody(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="Why, in your words; recorded in the audit log.")


class FollowupBody(BaseModel):
    kind: FollowupKind = Field(description="verifier | policy | runbook | test")
    severity: FollowupSeverity = Field(description="low | medium | high")
    owner: str = Field(pattern=NAME, max_length=63, description="A person or group of the identities file.")
    title: FollowupTitle = Field(description="What is to be done, in one line.")
    reason: str | None = Field(default=None, min_length=1, max_length=500, description="Why (default: the title).")


class Accepted(BaseModel):
    accepted: bool = True
    command_id: str = Field(description="CloudEvent id of the command on release.control.")
    release_id: str


class Submitted(BaseModel):
    release_id: str
    url: str = Field(description="The release's page on the dashboard.")
    status_url: str = Field(description="GET it for the release's state; `terminal` says when it ended.")


class Me(BaseModel):
    subject: str
    name: str
    groups: list[str]
    roles: list[str]


bearer = HTTPBearer(auto_error=False, description="An OIDC access token of releasegate's issuer (aud releasegate).")


def csp(issuer: str) -> str:
    return (
        f"default-src 'self'; connect-src 'self' {issuer}; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def new_release_id(service: str, version: str) -> str:
    tail = uuid.uuid4().hex[:8]
    return f"{f'{service}-{version}'[: MAX_RELEASE_ID - len(tail) - 1]}-{tail}"


def build(ports: Ports) -> FastAPI:
    app = FastAPI(
        title="releasegate API",
        version="1",
        description="Releases, their evidence and live status; operator commands and the CI ingress. Every /v1 "
        "route needs an OIDC bearer token: people's (groups decide viewer, operator, approver) or a CI job's "
        "(GitHub Actions or GitLab CI shape, for POST /v1/candidates).",
    )
    policy = csp(ports.issuer)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        # a change record's page brings its own, stricter policy (no script at all, its one style block)
        response.headers.setdefault("Content-Security-Policy", policy)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = response.headers.get("Cache-Control", "no-store")
        return response

    async def claims(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Claims:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        try:
            return await ports.tokens.verify(credentials.credentials)
        except ProviderError as exc:
            raise HTTPException(503, f"tokens cannot be checked now: {exc.reason}") from None
        except TokenError as exc:
            raise HTTPException(
                401, f"token refused: {exc.reason}", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ) from None

    async def person(c: Annotated[Claims, Depends(claims)]) -> Person:
        if c.is_ci:
            raise HTTPException(403, "a CI token cannot act as a person: sign in as yourself")
        if not _NAME.match(c.username):
            raise HTTPException(403, "the token's username is not a valid releasegate identity name")
        who = Person(c.username, c.subject, frozenset(g for g in c.groups if _NAME.match(g)))
        if not who.may_view:
            raise HTTPException(403, f"{who.username} is in no group: ask for releasegate-viewers")
        return who

    Viewer = Annotated[Person, Depends(person)]

    def release_id_param() -> Any:
        return PathParam(pattern=RELEASE_ID, max_length=MAX_RELEASE_ID, description="e.g. shop-v2-1a2b3c4d")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/me", response_model=Me, tags=["people"])
    async def me(who: Viewer) -> Me:
        return Me(
            subject=who.subject,
            name=who.username,
            groups=sorted(who.groups),
            roles=list(access.roles(who, ports.approver_groups())),
        )

    @app.get("/v1/releases", tags=["releases"])
    async def releases(
        who: Viewer,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        service: Annotated[str | None, Query(pattern=NAME)] = None,
    ) -> list[dict[str, Any]]:
        return await ports.read_models.releases(limit, service)

    @app.get("/v1/releases/{release_id}", tags=["releases"])
    async def release(
        c: Annotated[Claims, Depends(claims)], release_id: Annotated[str, release_id_param()]
    ) -> dict[str, Any]:
        """A release with its evidence. People in a group see every release, with the actions they may take; a CI
        job's token sees the releases of the services its pipeline may submit for (to watch what it submitted)."""
        rules = await _rules(release_id)
        if c.is_ci:
            if not ci.may_read(ports.ci_trust().get(rules.service, ()), c.raw, str(c.raw.get("iss", ""))):
                raise HTTPException(403, f"this CI identity may not read {rules.service} releases")
            found = await ports.read_models.release(release_id)
            if found is None:
                raise HTTPException(404, f"unknown release {release_id}")
            return {**found, "actions": [], "refusals": {}}
        who = await person(c)
        found = await ports.read_models.release(release_id)
        if found is None:
            raise HTTPException(404, f"unknown release {release_id}")
        found["actions"] = access.allowed(who, rules)
        found["refusals"] = {a: access.refusal(who, rules, a) for a in ACTIONS if access.refusal(who, rules, a)}
        return found

    async def _rules(release_id: str) -> ReleaseRules:
        row = await ports.read_models.saga_rules(release_id)
        if row is None:
            raise HTTPException(404, f"unknown release {release_id}")
        return ReleaseRules.of(*row)

    @app.post("/v1/releases/{release_id}/actions/{action}", status_code=202, response_model=Accepted, tags=["commands"])
    async def act(
        who: Viewer,
        release_id: Annotated[str, release_id_param()],
        action: Action,
        body: ActionBody,
    ) -> Accepted:
        rules = await _rules(release_id)
        why = access.refusal(who, rules, action)
        if why is not None:
            log.info("operator command refused", release_id=release_id, action=action, actor=who.username, reason=why)
            raise HTTPException(403, why)
        command_id = await ports.commands.give(action, release_id, who, body.reason)
        log.info("operator command published", release_id=release_id, action=action, actor=who.username)
        return Accepted(command_id=command_id, release_id=release_id)

    @app.post("/v1/releases/{release_id}/followups", status_code=202, response_model=Accepted, tags=["commands"])
    async def add_followup(who: Viewer, release_id: Annotated[str, release_id_param()], body: FollowupBody) -> Accepted:
        """Add a follow-up action to the incident of a rolled-back release (`releasegate followup add`)."""
        why = access.followup_refusal(who, await _rules(release_id), closing=False)
        if why is not None:
            raise HTTPException(403, why)
        command = FollowupAdded(
            release_id=release_id,
            actor=who.username,
            reason=body.reason or body.title,
            kind=body.kind,
            severity=body.severity,
            owner=body.owner,
            title=body.title,
        )
        return Accepted(command_id=await ports.commands.followup(command, who), release_id=release_id)

    @app.post(
        "/v1/releases/{release_id}/followups/{number}/close",
        status_code=202,
        response_model=Accepted,
        tags=["commands"],
    )
    async def close_followup(
        who: Viewer, release_id: Annotated[str, release_id_param()], number: FollowupNumber, body: ActionBody
    ) -> Accepted:
        """Close a follow-up of the incident of a rolled-back release (`releasegate followup close`)."""
        why = access.followup_refusal(who, await _rules(release_id), closing=True)
        if why is not None:
            raise HTTPException(403, why)
        command = FollowupClosed(release_id=release_id, actor=who.username, reason=body.reason, followup=number)
        return Accepted(command_id=await ports.commands.followup(command, who), release_id=release_id)

    @app.post("/v1/candidates", status_code=202, response_model=Submitted, tags=["ci"])
    async def submit(
        request: Request,
        c: Annotated[Claims, Depends(claims)],
        candidate: Annotated[dict[str, Any], Body(description="The candidate, as examples/candidates/*.json")],
    ) -> Submitted:
        if not c.is_ci:
            raise HTTPException(403, "only a CI job's token (GitHub Actions or GitLab CI) submits candidates")
        if len(json.dumps(candidate)) > MAX_CANDIDATE_BYTES:
            raise HTTPException(413, f"a candidate is at most {MAX_CANDIDATE_BYTES} bytes")
        service, version = str(candidate.get("service", "")), str(candidate.get("version", ""))
        if not _NAME.match(service) or not _NAME.match(version):
            raise HTTPException(422, "service and version must be releasegate names")
        who = c.raw.get("repository") or c.raw.get("project_path") or "ci"
        why = ci.refusal(
            ports.ci_trust().get(service, ()),
            c.raw,
            str(c.raw.get("iss", "")),
            service,
            source if isinstance(source := candidate.get("source"), dict) else {},
        )
        if why is not None:
            log.warning("candidate refused", service=service, version=version, ci=who, reason=why)
            raise HTTPException(403, why)
        release_id = new_release_id(service, version)
        try:
            event = CandidateSubmitted.model_validate({**candidate, "release_id": release_id, "submitted_by": "ci"})
        except ValidationError as exc:
            raise HTTPException(422, f"invalid candidate: {exc.error_count()} error(s): {_first(exc)}") from None
        await ports.commands.submit(event)
        log.info("candidate submitted", release_id=release_id, ci=who, ref=c.raw.get("ref"))
        base = ports.public_url.rstrip("/")
        return Submitted(
            release_id=release_id, url=f"{base}/releases/{release_id}", status_url=f"{base}/v1/releases/{release_id}"
        )

    def records() -> Records:
        if ports.records is None:
            raise HTTPException(503, "change records are not configured here: the records key is not installed")
        return ports.records

    async def opened_record(release_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            found = await records().opened(release_id)
        except change_record.RecordError as exc:
            log.error("stored change record does not verify", release_id=release_id, reason=str(exc))
            raise HTTPException(500, f"the stored change record does not verify: {exc}") from None
        if found is None:
            rules = await _rules(release_id)
            raise HTTPException(
                404,
                f"no change record of {release_id} yet: "
                + ("it is written within seconds of the release's end" if rules.state.terminal else "it has not ended"),
            )
        return found

    @app.get("/v1/releases/{release_id}/record", tags=["records"])
    async def record(who: Viewer, release_id: Annotated[str, release_id_param()]) -> JSONResponse:
        """The release's change record: a DSSE envelope (payloadType application/vnd.releasegate.change-record+json)
        signed with releasegate's records key; `releasegate record verify FILE` checks it with the public key."""
        envelope, _ = await opened_record(release_id)
        return JSONResponse(envelope)

    @app.get("/v1/releases/{release_id}/record.html", tags=["records"], response_class=HTMLResponse)
    async def record_page(who: Viewer, release_id: Annotated[str, release_id_param()]) -> HTMLResponse:
        """The change record as one self-contained page (no script, no external asset), after its signature was
        verified."""
        envelope, opened = await opened_record(release_id)
        signature = {
            "verified": True,
            "keyid": records().public_key.keyid,
            "payload_sha256": change_record.payload_digest(envelope),
        }
        return HTMLResponse(
            change_record_html.render(opened, signature),
            headers={"Content-Security-Policy": change_record_html.CSP},
        )

    @app.get("/v1/services/{service}/records", tags=["records"])
    async def service_records(
        who: Viewer,
        service: Annotated[str, PathParam(pattern=NAME, max_length=64)],
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[dict[str, Any]]:
        """The service's change records, newest first: release, version, outcome, signing key and payload digest."""
        base = ports.public_url.rstrip("/")
        return [
            {**r, "url": f"{base}/v1/releases/{r['release_id']}/record"}
            for r in await records().store.listing(service, limit)
        ]

    @app.get("/v1/approvals", tags=["releases"])
    async def approvals(who: Viewer) -> list[dict[str, Any]]:
        return await ports.read_models.pending_approvals()

    @app.get("/v1/verifiers", tags=["verification"])
    async def verifiers(who: Viewer) -> list[dict[str, Any]]:
        return await ports.read_models.verifiers()

    @app.get("/v1/calendar", tags=["policy"])
    async def calendar(who: Viewer) -> dict[str, Any]:
        return await ports.calendar()

    @app.get("/v1/dead-letters", tags=["operations"])
    async def dead_letters(who: Viewer, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[dict[str, Any]]:
        return await ports.read_models.dead_letters(limit)

    async def stream(release_id: str | None) -> AsyncIterator[bytes]:
        try:
            async with ports.hub.subscribe(release_id) as sub:
                yield b": live\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_SECONDS)
                    except TimeoutError:
                        yield b": heartbeat\n\n"
                        continue
                    yield sse(event)
        except TooManyClients as exc:
            yield sse({"error": str(exc)}, "error")

    sse_headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

    @app.get("/v1/events", tags=["live"], response_class=StreamingResponse)
    async def events(who: Viewer) -> StreamingResponse:
        """Server-sent events: every release.status record (`event: status`)."""
        return StreamingResponse(stream(None), media_type="text/event-stream", headers=sse_headers)

    @app.get("/v1/releases/{release_id}/events", tags=["live"], response_class=StreamingResponse)
    async def release_events(who: Viewer, release_id: Annotated[str, release_id_param()]) -> StreamingResponse:
        """Server-sent events: this release's release.status records (`event: status`)."""
        return StreamingResponse(stream(release_id), media_type="text/event-stream", headers=sse_headers)

    # --- dashboard ---------------------------------------------------------------------------------------

    @app.get("/ui/config.json", include_in_schema=False)
    async def ui_config() -> dict[str, str]:
        return {
            "issuer": ports.issuer,
            "client_id": ports.dashboard_client,
            "audience": ports.audience,
            "redirect_uri": f"{ports.public_url.rstrip('/')}/ui/callback",
        }

    def page(name: str) -> Response:
        path = STATIC / name
        if not path.is_file():
            return JSONResponse({"detail": f"dashboard page {name} is not installed"}, status_code=404)
        return FileResponse(path, media_type="text/html")

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return page("index.html")

    @app.get("/releases/{release_id}", include_in_schema=False)
    async def release_page(release_id: Annotated[str, release_id_param()]) -> Response:
        return page("release.html")

    @app.get("/ui/callback", include_in_schema=False)
    async def callback() -> Response:
        return page("callback.html")

    @app.get("/static/{name:path}", include_in_schema=False)
    async def static(name: str) -> Response:
        root = STATIC.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise HTTPException(404, "not found")
        return FileResponse(path)

    return app


def _first(exc: ValidationError) -> str:
    e = exc.errors()[0]
    return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
