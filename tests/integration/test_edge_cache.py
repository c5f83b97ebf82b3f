"""The edge cache for real: Debian's varnishd with the repository's VCL (deploy/varnish/default.vcl) in front of a
small origin that tags its pages like the storefront, driven through releasegate's adapter (the management CLI
with the secret). Its own varnishd on free ports, so it never touches the stack's edge."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from releasegate_platform.edge import EdgeError, VarnishEdge
from tests.conftest import REPO
from tests.support.shop import free_port, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Origin:
    """Pages tagged as the storefront tags them; `fetches` counts, per path, what reached it (what the edge did not
    serve)."""

    prices: dict[str, int] = field(default_factory=lambda: {"sku-1": 1999, "sku-2": 4500})
    banner: str = "spring"
    fetches: Counter[str] = field(default_factory=Counter)


def origin_app(origin: Origin) -> web.Application:
    def tagged(path: str, body: dict, keys: str) -> web.Response:
        origin.fetches[path] += 1
        return web.json_response(body, headers={"Cache-Control": "public, max-age=300", "Surrogate-Key": keys})

    async def price(request: web.Request) -> web.Response:
        sku = request.match_info["sku"]
        return tagged(
            request.path, {"sku": sku, "price_cents": origin.prices[sku], "currency": "USD"}, f"price product:{sku}"
        )

    async def banner(request: web.Request) -> web.Response:
        return tagged(request.path, {"banner": origin.banner}, "content")

    app = web.Application()
    app.router.add_get("/prices/{sku}", price)
    app.router.add_get("/banner", banner)
    return app


@dataclass
class Edge:
    adapter: VarnishEdge
    url: str
    admin: str
    origin: Origin
    workdir: Path


def start_varnishd(tmp_path: Path, origin_port: int, listen: int, admin: int) -> tuple[subprocess.Popen, Path, Path]:
    """varnishd in the foreground with the repository's VCL rendered for `origin_port`; its process, work folder
    (removed by the caller) and CLI secret."""
    secret = tmp_path / "secret"
    secret.write_text(secrets.token_urlsafe(32) + "\n")
    secret.chmod(0o600)
    # as root the jail drops to the varnish user, which must reach the VCL and the work folder (pytest's are
    # owner-only)
    workdir = Path(tempfile.mkdtemp(prefix="rg-edge-"))
    workdir.chmod(0o755)
    vcl = (REPO / "deploy" / "varnish" / "default.vcl").read_text()
    rendered = workdir / "default.vcl"
    rendered.write_text(vcl.replace("@ORIGIN_HOST@", "127.0.0.1").replace("@ORIGIN_PORT@", str(origin_port)))
    jail = [] if os.geteuid() == 0 else ["-j", "none"]
    with (tmp_path / "varnishd.log").open("wb") as log:
        proc = subprocess.Popen(
            ["varnishd", "-F", *jail, "-n", str(workdir / "work"), "-f", str(rendered), "-a", f"127.0.0.1:{listen}"]
            + ["-T", f"127.0.0.1:{admin}", "-S", str(secret), "-s", "malloc,16m"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc, workdir, secret


@pytest.fixture
async def edge(tmp_path) -> AsyncIterator[Edge]:
    origin = Origin()
    runner = web.AppRunner(origin_app(origin))
    await runner.setup()
    origin_port, listen, admin = free_port(), free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", origin_port).start()
    proc, workdir, secret = start_varnishd(tmp_path, origin_port, listen, admin)
    url = f"http://127.0.0.1:{listen}"

    async def answering() -> bool:
        assert proc.poll() is None, (tmp_path / "varnishd.log").read_text()
        try:
            async with httpx.AsyncClient() as c:
                return (await c.get(url + "/banner")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await wait_for(answering, 20, "varnishd answering")
        yield Edge(VarnishEdge(url, f"127.0.0.1:{admin}", secret), url, f"127.0.0.1:{admin}", origin, workdir)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
        await runner.cleanup()


async def page(edge: Edge, path: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient() as c:
        return await c.request(method, edge.url + path, headers={"Host": "acme.shop.test"})


class TestEdgeCache:
    async def test_serves_a_tagged_page_from_cache_without_asking_the_origin_again(self, edge):
        first, second = await page(edge, "/prices/sku-1"), await page(edge, "/prices/sku-1")
        assert (first.headers["X-Edge-Cache"], second.headers["X-Edge-Cache"]) == ("miss", "hit")
        assert second.json()["price_cents"] == 1999 and edge.origin.fetches["/prices/sku-1"] == 1
        assert "Surrogate-Key" not in second.headers  # the keys are the edge's business

    async def test_a_ban_by_surrogate_key_drops_the_tagged_pages_and_only_those(self, edge):
        await page(edge, "/prices/sku-1")
        await page(edge, "/banner")
        edge.origin.prices["sku-1"], edge.origin.banner = 1699, "summer"
        assert (await page(edge, "/prices/sku-1")).json()["price_cents"] == 1999  # stale until banned

        await edge.adapter.ban(["price"])

        fresh = await page(edge, "/prices/sku-1")
        assert fresh.json()["price_cents"] == 1699 and fresh.headers["X-Edge-Cache"] == "miss"
        kept = await page(edge, "/banner")
        assert kept.json()["banner"] == "spring" and kept.headers["X-Edge-Cache"] == "hit"

        await edge.adapter.flush()
        assert (await page(edge, "/banner")).json()["banner"] == "summer"

    async def test_a_purge_without_the_secret_is_refused_and_nothing_is_dropped(self, edge, tmp_path):
        await page(edge, "/prices/sku-1")
        edge.origin.prices["sku-1"] = 1
        for method in ("PURGE", "BAN"):
            refused = await page(edge, "/prices/sku-1", method)
            assert refused.status_code == 405, (method, refused.status_code)
        wrong = tmp_path / "guessed"
        wrong.write_text("not-the-secret\n")
        with pytest.raises(EdgeError, match="refused the management secret"):
            await VarnishEdge(edge.url, edge.admin, wrong).ban(["price"])

        after = await page(edge, "/prices/sku-1")
        assert after.json()["price_cents"] == 1999 and after.headers["X-Edge-Cache"] == "hit"
        assert edge.origin.fetches["/prices/sku-1"] == 1
