"""Prometheus metrics of the storefront and the middleware that records them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Metrics:
    def __init__(self, version: str) -> None:
        self.version = version
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shop_http_requests_total", "HTTP requests served.", ["version", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "shop_http_request_duration_seconds",
            "HTTP request handling time.",
            ["version", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5),
        )
        self.checkouts = Counter(
            "shop_checkouts_total", "Checkouts by outcome.", ["version", "outcome"], registry=self.registry
        )

    def checkout(self, outcome: str) -> None:
        self.checkouts.labels(self.version, outcome).inc()

    def middleware(self) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                route = request.match_info.route.resource
                # The route template, not the path, keeps label cardinality bounded (/orders/{id}).
                label = route.canonical if route is not None else "unmatched"
                self.requests.labels(self.version, label, str(status)).inc()
                self.latency.labels(self.version, label, str(status)).observe(time.perf_counter() - started)

        return record

    async def handle(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
