"""The edge cache end to end: shoppers read prices through Varnish (in front of HAProxy's production frontend);
`v11` lowers every price but declares only `content` for the edge, so once it takes all the traffic the edge still
serves the old prices: the deployer's edge check fails its step naming the stale key and both values, the release
is rolled back, and the rollback empties the edge so shoppers get stable's prices again."""

from __future__ import annotations

import asyncio

import pytest

from releasegate_platform.edge import VarnishEdge
from tests.e2e.conftest import release, status

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EDGE, EDGE_ADMIN = "http://127.0.0.1:18088", "127.0.0.1:18089"  # docs/local-stack.md
SHOPPER = "acme.shop.test"


@pytest.fixture
async def edge(settings):
    """The stack's edge, emptied before and after (through its authenticated channel), so no other module's pages
    are in it."""
    edge = VarnishEdge(EDGE, EDGE_ADMIN, settings.secrets_dir / "varnish" / "secret")
    await edge.flush()
    yield edge
    await edge.flush()


async def prices(edge: VarnishEdge, skus: list[str]) -> dict[str, tuple[int, str]]:
    pages = {sku: await edge.get(f"/prices/{sku}", SHOPPER) for sku in skus}
    return {sku: (page.body["price_cents"], page.cache) for sku, page in pages.items()}


class TestEdgeCache:
    async def test_a_release_that_leaves_prices_stale_at_the_edge_is_rolled_back_and_stable_prices_return(
        self, services, stable_v1, edge
    ):
        listing = await edge.get("/products", SHOPPER)
        skus = [p["sku"] for p in listing.body["products"]]
        before = await prices(edge, skus)  # shoppers browsing before the release: the edge keeps v1's prices
        assert {cache for _, cache in (await prices(edge, skus)).values()} == {"hit"}

        rid, timeline = await asyncio.to_thread(release, "v11", promoted=False)

        assert status(rid)["state"] == "rolled_back"
        failed = next(t for t in timeline if t["step"] == "canary-100" and " failed: " in t["reason"])
        sku = failed["reason"].split("stale price at the edge for product:", 1)[1].split(" ", 1)[0]
        old = before[sku][0]
        assert "(surrogate key `price`)" in failed["reason"]
        assert f"the edge serves {old} USD, v11 serves {old * 85 // 100} USD" in failed["reason"]
        assert "declares edge.invalidates [content], not price" in failed["reason"]
        assert not any(t["step"] == "verify-canary-100" for t in timeline)
        # the rollback emptied the edge: the next reads fetch stable's prices from the origin again
        after = await prices(edge, skus)
        assert {s: p for s, (p, _) in after.items()} == {s: p for s, (p, _) in before.items()}
        assert {cache for _, cache in after.values()} == {"miss"}
