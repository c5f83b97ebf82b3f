"""Runs one service process: logging, telemetry, pool, producer, broker, outbox relay, background loops,
and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import structlog
from aiohttp import web

from releasegate_runtime import db, logs, metrics, telemetry
from releasegate_runtime.backoff import Backoff
from releasegate_runtime.kafka import Consumer, Producer, client_options, make_broker
from releasegate_runtime.outbox import DirectPublisher, Relay
from releasegate_runtime.settings import ServiceSettings


@dataclass
class Runtime:
    """What a service's bootstrap gets to wire its handlers with."""

    name: str
    settings: ServiceSettings
    pool: asyncpg.Pool
    producer: Producer
    consumer: Consumer
    tasks: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # the outbox relay publishes what the service's transactions wrote; a service without an outbox (the API, which
    # publishes straight to the broker and keeps no state) turns it off
    outbox: bool = True
    # publishes a transaction's claimed outbox rows straight after its commit (`outbox.add(..., claim=True)`)
    direct: DirectPublisher | None = None
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


Setup = Callable[[Runtime], Awaitable[None]]
# checks a service runs on its settings before it connects to anything (e.g. refusing demo keys outside `local`)
Preflight = Callable[[ServiceSettings], None]
# a loop that crashes waits 1 s, 2 s, 4 s… up to 30 s before it runs again; one that ran this long starts over at 1 s
RESTART_DELAY_SECONDS = 1.0
RESTART_DELAY_CAP_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 60.0


# Python's cyclic collector runs a young collection every 700 net allocations by default: a coordinator deciding a
# batch allocates that many per record, and the older generations it then scans hold every saga it caches, so
# collections took up to 60 ms in the middle of a batch (found by timing the saga copy under bench.scale).
GC_THRESHOLDS = (50_000, 20, 20)


def _tune_gc() -> None:
    """What the process built to start (modules, settings, catalog) never becomes garbage: it is moved out of the
    collector's sight, and collections run less often (each one then sees more, at the same cost per object)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _supervised(task: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Runs a background loop for as long as the service runs, restarting it when it crashes (a database or
    broker outage, a bug hit by one input) with a growing delay; a loop that returns is not restarted."""
    log = structlog.get_logger()
    backoff = Backoff(RESTART_DELAY_SECONDS, RESTART_DELAY_CAP_SECONDS, jitter=0.5)
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await task()
            log.warning("background task finished", task=task.__name__)
            return
        except Exception as exc:
            if loop.time() - started >= HEALTHY_RUN_SECONDS:
                backoff.reset()
            delay = backoff.next_delay()
            log.error(
                "background task crashed; restarting", task=task.__name__, error=repr(exc), restart_in=round(delay, 1)
            )
            await asyncio.sleep(delay)


async def serve(
    name: str,
    settings: ServiceSettings,
    setup: Setup,
    *,
    stop: asyncio.Event | None = None,
    preflight: Sequence[Preflight] = (),
) -> None:
    """`name` is also the service's Kafka principal (unless RG_PRINCIPAL says otherwise), its consumer group
    `releasegate-<name>` and the owner of its result topic."""
    for check in preflight:
        check(settings)
    settings = settings.for_principal(name)
    log = logs.configure(name, settings.log_level)
    telemetry.configure(name, settings.otlp_endpoint)
    metrics.configure(name)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    pool = await _when_reachable("PostgreSQL", lambda: db.create_pool(settings.database_url, max_size=6), stop, log)
    producer = Producer(settings, f"releasegate-{name}")
    await producer.start()
    dead_letter_producer = Producer(settings, f"releasegate-{name}-deadletters", idempotent=False)
    await dead_letter_producer.start()
    broker = make_broker(settings, f"releasegate-{name}")
    consumer = Consumer(
        broker,
        f"releasegate-{name}",
        dead_letter_producer,
        name,
        pool,
        workers=settings.consumer_workers,
        fetch_wait_ms=settings.consumer_fetch_wait_ms,
        client=client_options(settings),
    )
    runtime = Runtime(name, settings, pool, producer, consumer)
    runtime.direct = DirectPublisher(pool, name, producer.enqueue)
    await setup(runtime)
    _tune_gc()
    runtime.consumer.register()
    if runtime.outbox:
        metrics.add_sampler("outbox", metrics.outbox_sampler(pool, name))
    metrics.add_sampler("consumer_lag", metrics.consumer_lag_sampler(runtime.consumer.clients))
    relay = Relay(pool, name, producer.enqueue)

    async def outbox_relay() -> None:
        """Retries broker and database outages itself; supervision is for what it did not foresee."""
        await relay.run()

    loops = [outbox_relay, runtime.direct.run, *runtime.tasks] if runtime.outbox else list(runtime.tasks)
    if runtime.consumer.topics:
        loops.append(runtime.consumer.commit_offsets)
    background = [asyncio.create_task(_supervised(t), name=t.__name__) for t in loops]
    await broker.start()
    await runtime.consumer.start()
    health = (
        await _serve_health(name, settings.health_port, pool, producer, runtime.consumer)
        if settings.health_port
        else None
    )
    log.info("service ready", kafka=settings.kafka_bootstrap, health_port=settings.health_port)
    try:
        await stop.wait()
    finally:
        log.info("service stopping")
        if health is not None:
            await health.cleanup()
        metrics.clear_samplers()
        await runtime.consumer.stop()
        with contextlib.suppress(Exception):  # what is not committed is delivered again, and handled idempotently
            await runtime.consumer.flush()
        await broker.stop()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for hook in runtime.on_stop:
            await hook()
        await dead_letter_producer.stop()
        await producer.stop()
        await pool.close()
        structlog.contextvars.clear_contextvars()


# PostgreSQL refusing or not answering while it restarts: a service started meanwhile waits for it (it is not
# healthy until then) instead of exiting and leaving the restart to its supervisor
T = TypeVar("T")
UNREACHABLE = (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)
STARTUP_RETRY_SECONDS, STARTUP_RETRY_CAP_SECONDS = 0.5, 5.0


async def _when_reachable(what: str, connect: Callable[[], Awaitable[T]], stop: asyncio.Event, log: Any) -> T:
    """`connect()` once `what` answers; retried with a capped backoff until then, or until `stop`."""
    backoff = Backoff(STARTUP_RETRY_SECONDS, STARTUP_RETRY_CAP_SECONDS, jitter=0.5)
    while True:
        try:
            return await connect()
        except UNREACHABLE as exc:
            if stop.is_set():
                raise
            delay = backoff.next_delay()
            log.warning(f"{what} not reachable yet; waiting", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


async def _serve_health(
    name: str, port: int, pool: asyncpg.Pool, producer: Producer, consumer: Consumer
) -> web.AppRunner:
    """GET /health: 200 when PostgreSQL answers, the Kafka producer knows a broker and the consumer's group
    members have joined their group once (a service reads nothing before that), else 503. GET /metrics: the
    process's Prometheus metrics (`releasegate_runtime.metrics`)."""

    async def health(_: web.Request) -> web.Response:
        checks = {"postgres": False, "kafka": producer.connected(), "consumer": consumer.joined()}
        try:
            async with pool.acquire(timeout=2) as conn:
                checks["postgres"] = await conn.fetchval("SELECT true")
        except db.UNAVAILABLE:
            pass
        ok = all(checks.values())
        return web.json_response(
            {"service": name, "status": "ok" if ok else "degraded", **checks}, status=200 if ok else 503
        )

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=await metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def main(name: str, setup: Setup, preflight: Sequence[Preflight] = ()) -> None:
    asyncio.run(serve(name, ServiceSettings(), setup, preflight=preflight))
