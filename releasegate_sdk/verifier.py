"""`Verifier`: a releasegate verifier service around one async check function. It runs as a releasegate service
(`releasegate_runtime.runner`: pool, producer, consumer with explicit acks and dead-lettering, outbox relay,
/health, structlog, OpenTelemetry, clean stop), in its own consumer group on the verify topic, and announces
itself with a heartbeat on its own result topic `release.results.verifier-<name>`."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from contracts import topics
from contracts.cloudevents import Envelope
from contracts.events import VerificationRequested, VerifierHeartbeat
from contracts.names import check_name
from releasegate_runtime import runner
from releasegate_runtime.runner import Runtime
from releasegate_runtime.settings import ServiceSettings
from releasegate_sdk.runs import DATA_LOOK_GAP_SECONDS, MIN_DATA_LOOK_GAP_SECONDS, Check, Runs

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
ANY = "*"
Startup = Callable[[Runtime], Awaitable[None]]


class Verifier:
    """Declare what the verifier covers, decorate its check, call `run()`.

    - `services`, `environments`: catalog services and environments it verifies (`"*"`: all); requests for
      others are acknowledged and skipped.
    - `kpis`: names of the measurements it reports (announced in its heartbeat).
    - `looks_every`: also look every so many seconds during the window; a passed or failed result ends it early.
      Without it, the check runs once, at the window's end.
    - `data_look_gap`: with `looks_every`, how soon after a look `new_data` may bring the next one forward
      (default 0.25 s); a check that is cheap and judges such looks only on what is safe to look at that often
      (`VerificationRequest.woken_by_data`) may take a shorter one.
    - `grace_seconds`: the verdict is due by the window's end plus the shorter of this and the window's length;
      keep it below the catalog's `grace_seconds`, after which the coordinator stops waiting.
    - `handles_synthetic`: take requests for synthetic journeys (previews before customer traffic); only the
      core verifier does.
    """

    def __init__(
        self,
        name: str,
        version: str,
        services: Sequence[str],
        environments: Sequence[str] = ("staging", "production"),
        kpis: Sequence[str] = (),
        *,
        looks_every: float | None = None,
        grace_seconds: float = 20.0,
        heartbeat_seconds: float = 5.0,
        handles_synthetic: bool = False,
        data_look_gap: float = DATA_LOOK_GAP_SECONDS,
    ) -> None:
        if not NAME_PATTERN.match(name):
            raise ValueError(f"verifier name {name!r}: lowercase letters, digits and single dashes, e.g. erp-export")
        check_name("verifier version", version)  # heartbeats carry it; the contract takes names only
        if not services or not environments:
            raise ValueError("a verifier covers at least one service and one environment ('*' for all)")
        if (looks_every is not None and looks_every <= 0) or grace_seconds < 0 or heartbeat_seconds <= 0:
            raise ValueError("looks_every and heartbeat_seconds must be positive, grace_seconds not negative")
        if data_look_gap < MIN_DATA_LOOK_GAP_SECONDS:
            raise ValueError(f"data_look_gap must be at least {MIN_DATA_LOOK_GAP_SECONDS} s")
        self.data_look_gap = data_look_gap
        self.name, self.version = name, version
        self.services, self.environments, self.kpis = list(services), list(environments), list(kpis)
        self.looks_every, self.grace_seconds, self.heartbeat_seconds = looks_every, grace_seconds, heartbeat_seconds
        self.handles_synthetic = handles_synthetic
        self.instance = uuid.uuid4().hex[:12]
        self._check: Check | None = None
        self._startup: list[Startup] = []
        self._runs: Runs | None = None

    @property
    def service_name(self) -> str:
        """Its service name: consumer group `releasegate-verifier-<name>`, outbox producer, log `service`."""
        return f"verifier-{self.name}"

    def check(self, fn: Check) -> Check:
        """Decorator: the async function that judges one request and returns a `Result`."""
        self._check = fn
        return fn

    def new_data(self) -> None:
        """Call when data the check reads has arrived (e.g. after an ingest batch committed): with `looks_every`,
        every open window looks now instead of at its next tick (at most every `data_look_gap` seconds)."""
        if self._runs is not None:
            self._runs.nudges.nudge()

    def on_startup(self, fn: Startup) -> Startup:
        """Decorator: an async function given the service's `Runtime` (pool, producer, consumer, background
        tasks) before messages flow, to wire adapters or add background tasks."""
        self._startup.append(fn)
        return fn

    def skip_reason(self, req: VerificationRequested) -> str | None:
        """Why a request is not for this verifier, or None if it is."""
        if req.synthetic is not None and not self.handles_synthetic:
            return "synthetic journeys are for the core verifier"
        if ANY not in self.services and req.service not in self.services:
            return f"service {req.service!r} is not one of {self.services}"
        if ANY not in self.environments and req.environment not in self.environments:
            return f"environment {req.environment!r} is not one of {self.environments}"
        return None

    def heartbeat(self) -> VerifierHeartbeat:
        return VerifierHeartbeat(
            name=self.name,
            version=self.version,
            instance=self.instance,
            services=self.services,
            environments=self.environments,
            kpis=self.kpis,
            interval_seconds=self.heartbeat_seconds,
            sent_at=datetime.now(UTC),
        )

    def run(self, settings: ServiceSettings | None = None, *, preflight: Sequence[runner.Preflight] = ()) -> None:
        """Serve until SIGTERM or SIGINT. Settings come from the RG_* environment, as for every service."""
        asyncio.run(self.serve(settings, preflight=preflight))

    async def serve(
        self,
        settings: ServiceSettings | None = None,
        *,
        stop: asyncio.Event | None = None,
        preflight: Sequence[runner.Preflight] = (),
    ) -> None:
        """Serve until `stop` is set (or a signal arrives); each `preflight` check runs on the settings first."""
        await runner.serve(
            self.service_name, settings or ServiceSettings(), self._setup, stop=stop, preflight=preflight
        )

    async def _setup(self, rt: Runtime) -> None:
        for hook in self._startup:
            await hook(rt)
        if self._check is None:
            raise RuntimeError(f"verifier {self.name} has no check: decorate one with @verifier.check")
        # a verdict goes to the broker straight after the transaction that closed its run; the relay is the safety net
        runs = self._runs = Runs(
            direct=rt.direct,
            name=self.name,
            consumer=rt.name,
            pool=rt.pool,
            check=self._check,
            skip=self.skip_reason,
            looks_every=self.looks_every,
            grace_seconds=self.grace_seconds,
            data_look_gap=self.data_look_gap,
        )
        rt.consumer.subscribe(topics.VERIFY_COMMANDS, runs.accept, accept=(VerificationRequested,))

        async def heartbeats() -> None:
            while True:
                await rt.producer.send_envelope(
                    topics.results_for(rt.name),
                    Envelope.new(self.heartbeat(), f"releasegate/{rt.name}/{self.instance}", subject=self.name),
                )
                await asyncio.sleep(self.heartbeat_seconds)

        rt.tasks += [runs.follow_all, heartbeats]
