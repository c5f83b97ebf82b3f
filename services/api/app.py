"""API process: the HTTP server (uvicorn) and the live status reader run inside the runtime every releasegate
service runs in (logging, telemetry, the database pool as rg_api, the producer as the `api` principal, /health), with
the writer of change records beside them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn

from releasegate_platform.identity import refuse_demo_keys
from releasegate_runtime import runner
from services.api import bootstrap, http, live
from services.api.config import ApiSettings

NAME = "api"


class Server(uvicorn.Server):
    """uvicorn without its signal handlers: the runtime owns SIGTERM/SIGINT and stops the server with the rest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def setup(rt: runner.Runtime) -> None:
    settings = ApiSettings().for_principal(NAME)
    hub = live.StatusHub(settings.sse_queue, settings.sse_clients)
    ports = bootstrap.build(rt, settings, hub)
    app = http.build(ports)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    server = Server(config)

    async def http_server() -> None:
        await server.serve()

    async def status_feed() -> None:
        await live.follow(settings, hub)

    async def change_records() -> None:
        if ports.records is not None:
            await ports.records.run(hub, settings.records_sweep_seconds)

    async def stop_server() -> None:
        server.should_exit = True

    rt.outbox = False
    rt.tasks.extend([http_server, status_feed, change_records])
    rt.on_stop.insert(0, stop_server)


def main() -> None:
    runner.main(NAME, setup, preflight=[refuse_demo_keys])
