"""The edge cache rules on fakes: the keys a release declares become bans at its cut-overs, a restore empties the
edge, a stale price at the edge once the candidate takes all the traffic fails the deploy step with the key and both
values; keys are validated before they reach a ban expression; the management channel sends nothing before Varnish
accepted the secret (the real Varnish: tests/integration/test_edge_cache.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from contracts.events import DeployAction, DeployFinished, DeployRequested, ObservedState
from releasegate_platform import supply_chain
from releasegate_platform.catalog import EdgeSpec
from releasegate_platform.edge import EdgeError, EdgePage, KeyRefused, VarnishEdge, ban_expression, rollback_flusher
from services.deployer.domain import DeployError
from services.deployer.edge import EdgeGuard, declared_keys, stale_prices
from services.deployer.handlers import Deployer
from tests.support.provenance import BUILDER, REPOSITORY, signed_provenance
from tests.support.targets import V2, FakeTarget

PRICES = {"v1": {"sku-1": 1999, "sku-2": 4500}, "v2": {"sku-1": 1699, "sku-2": 3825}}


class PortedTarget(FakeTarget):
    """The fake environment with the local target's instance ports (the edge check reads the candidate directly)."""

    async def observe(self, service: str, environment: str) -> ObservedState:
        state = await super().observe(service, environment)
        ports = {"v1": 20101, "v2": 20102}
        return state.model_copy(update={"instances": [{**i, "port": ports[i["version"]]} for i in state.instances]})


class FakeEdge:
    """A cache of price pages by sku, as Varnish would hold them: a ban of `price` drops them all."""

    def __init__(self, cached: dict[str, int]) -> None:
        self.cached, self.banned, self.flushed = dict(cached), [], 0
        self.origin: dict[str, int] = {}

    async def ban(self, keys: list[str]) -> list[str]:
        self.banned += keys
        if "price" in keys:
            self.cached.clear()
        return [ban_expression(k) for k in keys]

    async def flush(self) -> str:
        self.flushed += 1
        self.cached.clear()
        return "ban obj.http.Surrogate-Key ~ ."

    async def get(self, path: str, host: str) -> EdgePage:
        sku = path.rsplit("/", 1)[1]
        hit = sku in self.cached
        price = self.cached.setdefault(sku, self.origin[sku])  # a miss fetches what the origin serves now
        return EdgePage(200, {"sku": sku, "price_cents": price, "currency": "USD"}, "hit" if hit else "miss")


def origin_of(edge: FakeEdge) -> Any:
    async def read(port: int, path: str, host: str) -> tuple[int, Any]:
        version = {20101: "v1", 20102: "v2"}[port]
        if path == "/products":
            return 200, {"products": [{"sku": s} for s in PRICES[version]]}
        sku = path.rsplit("/", 1)[1]
        return 200, {"sku": sku, "price_cents": PRICES[version][sku], "currency": "USD"}

    return read


class Env:
    """The deployer on fakes (target, bundle with `manifest`, step results) with the edge guard on a FakeEdge."""

    def __init__(self, signing: tuple[supply_chain.TrustRoot, Path], manifest: dict[str, Any], weight: int) -> None:
        root, self.key = signing
        self.target = PortedTarget().with_candidate("v2", V2, weight)
        self.edge = FakeEdge(PRICES["v1"])
        self.edge.origin = PRICES["v2"] if weight == 100 else PRICES["v1"]
        self.results: dict[str, DeployFinished] = {}

        async def unpack(digest: str) -> tuple[Path, dict[str, Any]]:
            return Path("/bundles/x"), {"service": "shop", **manifest}

        async def get(release_id: str, step_id: str) -> DeployFinished | None:
            return self.results.get(step_id)

        async def put(result: DeployFinished) -> None:
            self.results.setdefault(result.step_id, result)

        guard = EdgeGuard(lambda s: EdgeSpec() if s == "shop" else None, self.edge, origin_of(self.edge))
        self.deployer = Deployer(
            lambda service, environment: self.target,  # type: ignore[arg-type, return-value]
            SimpleNamespace(unpack=unpack),  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]  # no migrations in these steps
            SimpleNamespace(get=get, put=put),  # type: ignore[arg-type]
            lambda: root,
            admission=None,  # type: ignore[arg-type]  # deploy() is called directly: admission is app-level
            reply=None,  # type: ignore[arg-type]
            edge=guard,
        )

    async def run(self, action: DeployAction, step: str, **fields: Any) -> DeployFinished:
        args: dict[str, Any] = {
            "release_id": "rel-1",
            "step_id": step,
            "service": "shop",
            "version": "v2",
            "digest": V2,
            "environment": "production",
            "action": action,
            "weight": 0,
            "instances": 2,
            "attestation": signed_provenance(V2, self.key),
            **fields,
        }
        return await self.deployer.deploy(DeployRequested(**args))


def env_with_edge(signing: Any, manifest: dict[str, Any], candidate_weight: int) -> tuple[Env, FakeEdge]:
    env = Env(signing, manifest, candidate_weight)
    return env, env.edge


@pytest.fixture
def signing(tmp_path: Path) -> tuple[supply_chain.TrustRoot, Path]:
    """A builder key the trust root trusts for the shop (the deployer re-verifies provenance on every step)."""
    private, public = supply_chain.keygen(tmp_path / "keys", "builder")
    root = {
        "version": 3,
        "builders": {BUILDER: {"threshold": 1, "keys": [json.loads(public.read_text())]}},
        "services": {"shop": {"sources": [{"repository": REPOSITORY, "refs": ["refs/heads/main"]}]}},
    }
    (tmp_path / "trust-root.yaml").write_text(yaml.safe_dump(root))
    return supply_chain.TrustRoot.load(tmp_path / "trust-root.yaml"), private


class TestDeclaredKeys:
    def test_a_release_declares_the_keys_it_changes_in_its_bundle(self):
        assert declared_keys({"edge": {"invalidates": ["price", "product:sku-1"]}}) == ["price", "product:sku-1"]
        assert declared_keys({}) == []

    @pytest.mark.parametrize(
        "bad", ['price" || obj.status ~ "', "price content", "", "PRICE", 7, "price\n", "price\nban req.url ~ ."]
    )  # a newline would end the CLI command: the key must be the whole string, not a line of it
    def test_a_key_that_could_change_the_ban_expression_is_refused(self, bad):
        with pytest.raises(DeployError, match="not a surrogate key"):
            declared_keys({"edge": {"invalidates": [bad]}})
        with pytest.raises(KeyRefused):
            ban_expression(str(bad))

    def test_a_declaration_that_is_not_a_list_is_refused(self):
        with pytest.raises(DeployError, match="invalidates"):
            declared_keys({"edge": {"invalidates": "price"}})

    def test_a_key_is_banned_as_a_whole_word_of_the_surrogate_key_header(self):
        assert ban_expression("price") == r'ban obj.http.Surrogate-Key ~ "(^|\\s)price(\\s|$)"'


class TestStaleDetection:
    def test_a_price_that_differs_from_the_candidates_is_stale_and_an_equal_one_is_not(self):
        edge = {"sku-1": {"price_cents": 1999, "currency": "USD"}, "sku-2": {"price_cents": 3825, "currency": "USD"}}
        origin = {"sku-1": {"price_cents": 1699, "currency": "USD"}, "sku-2": {"price_cents": 3825, "currency": "USD"}}
        [stale] = stale_prices(edge, origin)
        assert (stale.key, stale.edge, stale.origin) == ("product:sku-1", "1999 USD", "1699 USD")

    def test_a_price_page_the_edge_could_not_give_counts_as_stale(self):
        [stale] = stale_prices({"sku-1": None}, {"sku-1": {"price_cents": 1, "currency": "USD"}})
        assert stale.edge == "no price page"


class TestCutOver:
    async def test_each_canary_step_bans_the_declared_keys_without_checking_yet(self, signing):
        env, edge = env_with_edge(signing, {"edge": {"invalidates": ["content"]}}, 10)
        result = await env.run(DeployAction.SHIFT, "canary-10", weight=10)
        assert result.succeeded, result.reason
        assert edge.banned == ["content"] and "edge: banned content" in result.reason
        assert "edge check" not in result.reason

    async def test_a_release_that_forgets_price_fails_at_100_percent_naming_the_key_and_both_values(self, signing):
        env, edge = env_with_edge(signing, {"edge": {"invalidates": ["content"]}}, 100)
        result = await env.run(DeployAction.SHIFT, "canary-100", weight=100)
        assert not result.succeeded
        assert "stale price at the edge for product:sku-1 (surrogate key `price`)" in result.reason
        assert "the edge serves 1999 USD, v2 serves 1699 USD" in result.reason
        assert "declares edge.invalidates [content], not price" in result.reason

    async def test_a_release_that_declares_price_passes_the_edge_check(self, signing):
        env, edge = env_with_edge(signing, {"edge": {"invalidates": ["price", "content"]}}, 100)
        result = await env.run(DeployAction.SHIFT, "canary-100", weight=100)
        assert result.succeeded, result.reason
        assert "edge check: 2 prices through the edge match v2" in result.reason

    async def test_a_start_at_zero_percent_touches_nothing_at_the_edge(self, signing):
        env, edge = env_with_edge(signing, {"edge": {"invalidates": ["price"]}}, 0)
        env.target.replicas.pop("v2")
        result = await env.run(DeployAction.START, "canary-start", weight=0)
        assert result.succeeded and edge.banned == [] and edge.flushed == 0

    async def test_a_restore_empties_the_edge_of_everything_the_release_may_have_cached(self, signing):
        env, edge = env_with_edge(signing, {"edge": {"invalidates": []}}, 50)
        result = await env.run(DeployAction.RESTORE, "restore-production", batch_size=1)
        assert result.succeeded, result.reason
        assert edge.flushed == 1 and edge.cached == {}

    async def test_staging_has_no_edge(self, signing):
        env, edge = env_with_edge(signing, {"edge": {"invalidates": ["content"]}}, 100)
        result = await env.run(DeployAction.SHIFT, "staging-100", weight=100, environment="staging")
        assert result.succeeded and edge.banned == [] and "edge" not in result.reason


class TestRollbackFlush:
    async def test_the_rollback_service_empties_the_edge_of_the_service_it_rolled_back(self):
        edge = FakeEdge(PRICES["v2"])
        flush = rollback_flusher(lambda s: EdgeSpec() if s == "shop" else None, edge)
        assert "ban obj.http.Surrogate-Key" in await flush("shop", "production")
        assert await flush("shop", "staging") == "" and await flush("erp", "production") == ""
        assert edge.flushed == 1


class FakeVarnishCli:
    """Varnish's CLI handshake (challenge, `auth <sha256>`) in front of a command log."""

    def __init__(self, secret: bytes) -> None:
        self.secret, self.commands = secret, []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(status: int, body: str) -> None:
            writer.write(f"{status:<3d} {len(body):<8d}\n{body}\n".encode())

        challenge = secrets.token_hex(16)
        say(107, f"{challenge}\n\nAuthentication required.\n")
        line = (await reader.readline()).decode().strip()
        expected = hashlib.sha256(f"{challenge}\n".encode() + self.secret + f"{challenge}\n".encode()).hexdigest()
        if line != f"auth {expected}":
            say(107, f"{secrets.token_hex(16)}\n\nAuthentication required.\n")
            await writer.drain()
            writer.close()
            return
        say(200, "welcome")
        while line := (await reader.readline()).decode().strip():
            self.commands.append(line)
            say(200, "")
            await writer.drain()
        writer.close()


@pytest.fixture
async def cli(tmp_path: Path) -> AsyncIterator[tuple[FakeVarnishCli, str, Path]]:
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cret-of-this-machine\n")
    fake = FakeVarnishCli(secret.read_bytes())
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield fake, f"127.0.0.1:{port}", secret


class TestManagementChannel:
    async def test_with_the_secret_the_bans_are_sent(self, cli):
        fake, admin, secret = cli
        await VarnishEdge("http://127.0.0.1:1", admin, secret).ban(["price", "product:sku-1"])
        assert fake.commands == [ban_expression("price"), ban_expression("product:sku-1")]

    async def test_without_the_secret_nothing_is_sent(self, cli, tmp_path):
        fake, admin, _ = cli
        guessed = tmp_path / "guessed"
        guessed.write_bytes(b"guess\n")
        with pytest.raises(EdgeError, match="refused the management secret"):
            await VarnishEdge("http://127.0.0.1:1", admin, guessed).flush()
        assert fake.commands == []
