"""The deployer's part of the edge cache: at each cut-over in the edge's environment, ban the surrogate keys the
release declares (bundle.json `"edge": {"invalidates": [...]}`, part of the signed artifact); once the candidate
takes all the traffic, read every product's price through the edge and from the candidate directly, and fail the
step on a stale one (the coordinator then compensates); at a restore, ban everything the service tagged.

The rules (`declared_keys`, `stale_prices`, `stale_reason`) are pure; `EdgeGuard` gets the edge, the catalog's
edge entry and a reader of the candidate's own pages injected (bootstrap), so it runs as well on fakes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from contracts.events import DeployAction, DeployRequested
from releasegate_platform.catalog import EdgeSpec
from releasegate_platform.edge import EdgeError, EdgePage, KeyRefused, checked_keys
from releasegate_platform.targets.port import DeploymentTarget
from services.deployer.domain import DeployError

PRICE_KEY = "price"
# actions after which the candidate may serve the edge's environment (a START at 0% serves nobody yet)
CUT_OVER = {DeployAction.SHIFT, DeployAction.ROUTE, DeployAction.ROLL, DeployAction.FINALIZE, DeployAction.START}


class Edge(Protocol):
    async def ban(self, keys: list[str]) -> list[str]: ...

    async def flush(self) -> str: ...

    async def get(self, path: str, host: str) -> EdgePage: ...


# (port of the candidate's instance, path, Host header) → (HTTP status, JSON body): the candidate, not the edge
Origin = Callable[[int, str, str], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True)
class Stale:
    sku: str
    edge: str
    origin: str

    @property
    def key(self) -> str:
        return f"product:{self.sku}"


def declared_keys(manifest: dict[str, Any]) -> list[str]:
    """The surrogate keys a bundle says its release changes; DeployError on a malformed declaration."""
    edge = manifest.get("edge", {})
    keys = edge.get("invalidates", []) if isinstance(edge, dict) else None
    if not isinstance(keys, list):
        raise DeployError('bundle.json `edge` must be {"invalidates": [<surrogate key>, ...]}')
    try:
        return checked_keys(keys)
    except KeyRefused as exc:
        raise DeployError(f"bundle.json edge.invalidates: {exc}") from None


def _price(page: Any) -> str | None:
    if not isinstance(page, dict) or "price_cents" not in page:
        return None
    return f"{page['price_cents']} {page.get('currency', '')}".strip()


def stale_prices(edge: dict[str, Any], origin: dict[str, Any]) -> list[Stale]:
    """Per sku, the edge's price page against the candidate's: every sku whose price differs (a page the edge could
    not give counts as stale: a shopper would not see the candidate's price either)."""
    found = []
    for sku in sorted(origin):
        want, got = _price(origin[sku]), _price(edge.get(sku))
        if want is not None and got != want:
            found.append(Stale(sku, got or "no price page", want))
    return found


def stale_reason(version: str, stale: list[Stale], checked: int, declared: list[str]) -> str:
    first = stale[0]
    others = f" ({len(stale)} of {checked} products stale: {', '.join(s.sku for s in stale)})" if len(stale) > 1 else ""
    hint = (
        f"; {version}'s bundle.json declares edge.invalidates [{', '.join(declared)}], not {PRICE_KEY}"
        if PRICE_KEY not in declared
        else ""
    )
    return (
        f"edge check failed: stale {PRICE_KEY} at the edge for {first.key} (surrogate key `{PRICE_KEY}`): the edge "
        f"serves {first.edge}, {version} serves {first.origin}{others}{hint}"
    )


class EdgeGuard:
    """`spec_of(service)`: the catalog's edge entry of the service (None: it has no edge)."""

    def __init__(self, spec_of: Callable[[str], EdgeSpec | None], edge: Edge, origin: Origin) -> None:
        self._spec_of, self._edge, self._origin = spec_of, edge, origin

    async def after(self, req: DeployRequested, target: DeploymentTarget, manifest: dict[str, Any]) -> str:
        """What the edge did after the step, to append to its reason; DeployError fails the step."""
        spec = self._spec_of(req.service)
        if spec is None or spec.environment != req.environment or req.action is DeployAction.MIGRATE:
            return ""
        try:
            if req.action is DeployAction.RESTORE:
                return f"; edge: {await self._edge.flush()} (everything the release may have cached)"
            keys = declared_keys(manifest)
            observed = await target.observe(req.service, req.environment)
            share = observed.weights.get(req.version, 0)
            if req.action not in CUT_OVER or (share == 0 and not observed.tenants_on_candidate):
                return ""
            note = f"; edge: banned {', '.join(keys)}" if keys else "; edge: the release declares no keys to ban"
            if keys:
                await self._edge.ban(keys)
            if share < 100 or req.action is DeployAction.FINALIZE:
                return note  # finalize: checked when the candidate took all the traffic, before it became stable
            port = next(
                (i.get("port") for i in observed.instances if i.get("version") == req.version and i.get("port")),
                None,
            )
            if not isinstance(port, int):
                raise DeployError(f"edge check: no {req.version} instance to read prices from directly")
            return note + await self._check(spec, req.version, port, keys)
        except EdgeError as exc:
            raise DeployError(f"edge: {exc}") from None

    async def _check(self, spec: EdgeSpec, version: str, port: int, declared: list[str]) -> str:
        status, listing = await self._origin(port, spec.catalog_path, spec.host)
        products = listing.get("products") if status == 200 and isinstance(listing, dict) else None
        if not isinstance(products, list):
            raise DeployError(f"edge check: {version} answered {spec.catalog_path} with {status}, no product list")
        skus = [p["sku"] for p in products if isinstance(p, dict) and isinstance(p.get("sku"), str)]
        origin, edge, hits = {}, {}, 0
        for sku in skus:
            path = spec.price_path.replace("{sku}", sku)
            status, origin[sku] = await self._origin(port, path, spec.host)
            page = await self._edge.get(path, spec.host)
            edge[sku], hits = page.body if page.status == 200 else None, hits + (page.cache == "hit")
        stale = stale_prices(edge, origin)
        if stale:
            raise DeployError(stale_reason(version, stale, len(skus), declared))
        return f"; edge check: {len(skus)} prices through the edge match {version} ({hits} served from cache)"
