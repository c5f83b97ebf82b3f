"""Helpers of the notifier's tests: in-memory ports for its handlers (unit tests), a real local HTTP receiver and a
secrets folder as the notifier reads it (channel and integration tests), a sample notification."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from contracts.cloudevents import Envelope
from contracts.events import ReleaseState, ReleaseStatusChanged
from services.notifier.domain import Notification, ReleaseContext
from services.notifier.ports import Delivery, Source


def notification(**over: object) -> Notification:
    """A notification of a rolled-back shop v3 in production; keyword arguments change any field."""
    fields: dict[str, object] = {
        "event_id": "e-1",
        "event_type": "dev.releasegate.release.status-changed.v1",
        "kind": "rolled_back",
        "severity": "warning",
        "release_id": "r-1",
        "service": "shop",
        "version": "v3",
        "environment": "production",
        "state": "rolled_back",
        "step": None,
        "title": "shop v3: rolled back in production",
        "reason": "verify-canary-10 failed: checkout_success dropped",
        "occurred_at": "2026-12-01T12:00:00+00:00",
        "url": "http://127.0.0.1:18800/releases/r-1",
    }
    return Notification(**{**fields, **over})  # type: ignore[arg-type]


N = notification(
    kind="rollback_failed",
    severity="critical",
    state="rollback_failed",
    title="shop v3: rollback failed in production",
    reason="compensate:production failed: HAProxy unreachable",
)


class FakeRoutes:
    def __init__(self, routes):
        self.routes = routes

    def of(self, service):
        return self.routes if service == "shop" else []


class FakeDeliveries:
    """The ledger's contract in memory: one row per (event, route), processed events, release contexts."""

    def __init__(self, clock):
        self.clock = clock
        self.processed: set[str] = set()
        self.contexts: dict[str, ReleaseContext] = {}
        self.rows: dict[tuple[str, str], dict] = {}
        self.dead_letters: list[tuple[Source, str]] = []
        self.sources: dict[str, Source] = {}

    async def context(self, release_id):
        return self.contexts.get(release_id)

    async def record(self, consumer, n, routes, source, context):
        if n.event_id in self.processed:
            return False
        self.processed.add(n.event_id)
        if context is not None:
            self.contexts[n.release_id] = context
        self.sources[n.event_id] = source
        for r in routes:
            self.rows.setdefault((n.event_id, r.name), {"route": r, "n": n, "status": "pending", "attempts": 0,
                                                       "due": self.clock(), "error": None})  # fmt: skip
        return True

    async def claim(self, limit, lease_seconds):
        due = [k for k, r in self.rows.items() if r["status"] in ("pending", "sending") and r["due"] <= self.clock()]
        out = []
        for k in due[:limit]:
            row = self.rows[k]
            row.update(
                status="sending", attempts=row["attempts"] + 1, due=self.clock() + timedelta(seconds=lease_seconds)
            )
            out.append(Delivery(k[0], row["route"], row["n"], row["attempts"]))
        return out

    async def delivered(self, d):
        self.rows[(d.event_id, d.route.name)]["status"] = "delivered"

    async def retry(self, d, error, at):
        self.rows[(d.event_id, d.route.name)].update(status="pending", due=at, error=error)

    async def give_up(self, d, error):
        self.rows[(d.event_id, d.route.name)].update(status="failed", error=error)
        self.dead_letters.append((self.sources[d.event_id], error))


def status_envelope(state=ReleaseState.ROLLED_BACK, step=None, release_id="r-1"):
    data = ReleaseStatusChanged(
        release_id=release_id, service="shop", version="v3", state=state, step=step, actor="coordinator",
        reason="verify-canary-10 failed",
    )  # fmt: skip
    return Envelope.new(data, "releasegate/coordinator", release_id)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each request with the next scripted (status, body), then 200; records what arrived."""

    base: str = ""
    script: list[tuple[int, bytes]] = field(default_factory=list)
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    hold: asyncio.Event | None = None  # when given, every answer waits until it is set (a request kept in flight)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Received(request.path_qs, dict(request.headers), await request.read()))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.delay:
            await asyncio.sleep(self.delay)  # a receiver that does not answer in time
        status, body = self.script.pop(0) if self.script else (200, b"ok")
        headers = {"Location": f"{self.base}/elsewhere"} if 300 <= status < 400 else None
        return web.Response(status=status, body=body, headers=headers)


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[Receiver]:
    """`receiver` listening on a free loopback port (its `base` URL) until the block ends."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.base = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


class Secrets:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, ref: str, value: str) -> str:
        path = self.root / ref
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(value + "\n")
        path.chmod(0o600)
        return ref
