"""Runs one service process: logging, telemetry, pool, producer, broker, outbox relay, background loops,
and a clean stop on SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from services.common import db, logs, telemetry
from services.common.identity import refuse_demo_keys
from services.common.kafka import Consumer, Producer, make_broker
from services.common.outbox import Relay
from services.common.settings import ServiceSettings


@dataclass
class Runtime:
    """What a service's bootstrap gets to wire its handlers with."""

    name: str
    settings: ServiceSettings
    pool: asyncpg.Pool
    producer: Producer
    consumer: Consumer
    tasks: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


Setup = Callable[[Runtime], Awaitable[None]]
RESTART_DELAY_SECONDS = 1.0


async def _supervised(task: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Restarts a background loop that crashed (a database or broker outage), after a short delay."""
    while True:
        try:
            await task()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            structlog.get_logger().error("background task crashed; restarting", task=task.__name__,
                                         error=repr(exc))
            await asyncio.sleep(RESTART_DELAY_SECONDS)


async def serve(name: str, settings: ServiceSettings, setup: Setup, *, stop: asyncio.Event | None = None) -> None:
    """`name` is also the service's Kafka principal (unless RG_PRINCIPAL says otherwise), its consumer group
    `releasegate-<name>` and the owner of its result topic."""
    refuse_demo_keys(settings)
    settings = settings.for_principal(name)
    log = logs.configure(name, settings.log_level)
    telemetry.configure(name, settings.otlp_endpoint)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    pool = await db.create_pool(settings.database_url, max_size=6)
    producer = Producer(settings, f"releasegate-{name}")
    await producer.start()
    broker = make_broker(settings, f"releasegate-{name}")
    runtime = Runtime(name, settings, pool, producer, Consumer(broker, f"releasegate-{name}", producer, name))
    await setup(runtime)
    runtime.consumer.register()
    relay = Relay(pool, name, producer.send)
    background = [asyncio.create_task(relay.run(), name="outbox-relay")]
    background += [asyncio.create_task(_supervised(t), name=t.__name__) for t in runtime.tasks]
    await broker.start()
    health = await _serve_health(name, settings.health_port, pool, producer) if settings.health_port else None
    log.info("service ready", kafka=settings.kafka_bootstrap, health_port=settings.health_port)
    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *background], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception():
                log.error("background task died", task=task.get_name(), error=repr(task.exception()))
    finally:
        log.info("service stopping")
        if health is not None:
            await health.cleanup()
        await broker.stop()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for hook in runtime.on_stop:
            await hook()
        await producer.stop()
        await pool.close()
        structlog.contextvars.clear_contextvars()


async def _serve_health(name: str, port: int, pool: asyncpg.Pool, producer: Producer) -> web.AppRunner:
    """GET /health: 200 when PostgreSQL answers and the Kafka producer knows a broker, else 503."""

    async def health(_: web.Request) -> web.Response:
        checks = {"postgres": False, "kafka": producer.connected()}
        try:
            async with pool.acquire(timeout=2) as conn:
                checks["postgres"] = await conn.fetchval("SELECT true")
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            pass
        ok = all(checks.values())
        return web.json_response({"service": name, "status": "ok" if ok else "degraded", **checks},
                                 status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def main(name: str, setup: Setup) -> None:
    asyncio.run(serve(name, ServiceSettings(), setup))
