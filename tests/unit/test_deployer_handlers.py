"""The deployer's handler on in-memory fakes of its ports (the target: tests/support/targets.py): what each deploy
action does to an environment, each (release, step) done once, and an artifact without valid provenance refused
before the target is touched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.events import DeployAction, DeployFinished, DeployRequested
from releasegate_platform import supply_chain
from services.deployer.handlers import Deployer
from tests.support.provenance import BUILDER, REPOSITORY, signed_provenance
from tests.support.targets import V1, V2, FakeTarget


class FakeBundles:
    def __init__(self) -> None:
        self.unpacked: list[str] = []

    async def unpack(self, digest: str) -> tuple[Path, dict[str, Any]]:
        self.unpacked.append(digest)
        return Path("/bundles") / digest.split(":")[1], {"service": "shop"}


class FakeMigrations:
    def __init__(self) -> None:
        self.applied: list[tuple[str, str]] = []

    async def migrate(self, environment: str, folder: Path, release_id: str) -> tuple[list[str], list[str]]:
        self.applied.append((environment, release_id))
        return ["0002_add_column.sql"], ["0001_init.sql"]

    async def server_version(self, environment: str) -> str:
        return "16.4"


class FakeSteps:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], DeployFinished] = {}

    async def get(self, release_id: str, step_id: str) -> DeployFinished | None:
        return self.rows.get((release_id, step_id))

    async def put(self, result: DeployFinished) -> None:
        self.rows.setdefault((result.release_id, result.step_id), result)


class Env:
    def __init__(self, target: FakeTarget, root: supply_chain.TrustRoot, keys: Path) -> None:
        self.target, self.bundles, self.migrations, self.steps = target, FakeBundles(), FakeMigrations(), FakeSteps()
        self.published: list[tuple[str, str]] = []
        self.keys = keys

        async def published(service: str, environment: str) -> None:
            self.published.append((service, environment))

        async def reply(envelope: Any, compute: Any) -> None:
            await compute()

        self.deployer = Deployer(
            lambda service, environment: self.target,
            self.bundles,
            self.migrations,
            self.steps,
            lambda: root,
            admission=None,  # type: ignore[arg-type]  # deploy() is called directly: admission is app-level
            reply=reply,
            published=published,
        )

    def attestation(self, digest: str, service: str = "shop") -> dict[str, Any]:
        return signed_provenance(digest, self.keys, service=service)

    def request(self, action: DeployAction, step: str, **fields: Any) -> DeployRequested:
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
        }
        args.update(fields)
        args.setdefault("attestation", self.attestation(args["digest"]))
        return DeployRequested(**args)

    async def run(self, action: DeployAction, step: str, **fields: Any) -> DeployFinished:
        return await self.deployer.deploy(self.request(action, step, **fields))


@pytest.fixture
def signing(tmp_path: Path) -> tuple[supply_chain.TrustRoot, Path]:
    private, public = supply_chain.keygen(tmp_path / "keys", "builder")
    root_file = tmp_path / "trust-root.yaml"
    root_file.write_text(
        yaml.safe_dump(
            {
                "version": 3,
                "builders": {BUILDER: {"threshold": 1, "keys": [json.loads(public.read_text())]}},
                "services": {"shop": {"sources": [{"repository": REPOSITORY, "refs": ["refs/heads/main"]}]}},
            }
        )
    )
    return supply_chain.TrustRoot.load(root_file), private


@pytest.fixture
def env(signing: tuple[supply_chain.TrustRoot, Path]) -> Env:
    return Env(FakeTarget(), *signing)


class TestStartAndShift:
    async def test_start_runs_the_candidate_beside_stable_and_gives_it_its_weight(self, env: Env):
        result = await env.run(DeployAction.START, "canary-10", weight=10)
        assert result.succeeded, result.reason
        assert env.target.calls == [("run_version", "v2", 2), ("shift", {"v2": 10, "v1": 90})]
        assert result.observed is not None and result.observed.weights == {"v1": 90, "v2": 10}
        assert "v2 on 2 instance(s) in production at 10% beside v1" == result.reason

    async def test_shift_moves_weight_to_a_candidate_that_already_runs(self, env: Env):
        await env.run(DeployAction.START, "canary-10", weight=10)
        result = await env.run(DeployAction.SHIFT, "canary-50", weight=50)
        assert result.succeeded and env.target.calls[-1] == ("shift", {"v2": 50, "v1": 50})

    async def test_shift_without_a_running_candidate_fails_and_moves_no_traffic(self, env: Env):
        result = await env.run(DeployAction.SHIFT, "canary-50", weight=50)
        assert not result.succeeded and "no serving v2 instance in production" in result.reason
        assert env.target.calls == []

    async def test_an_environment_without_a_stable_version_asks_for_the_bootstrap(self, signing):
        env = Env(FakeTarget(stable=None), *signing)
        result = await env.run(DeployAction.START, "canary-10", weight=10)
        assert not result.succeeded and "run the bootstrap" in result.reason and env.target.calls == []

    async def test_a_target_refusal_fails_the_step_with_the_target_reason(self, env: Env):
        env.target.fail_on = "shift"
        result = await env.run(DeployAction.START, "canary-10", weight=10)
        assert not result.succeeded and result.reason == "shift refused by the target"


class TestTenantRouting:
    async def test_route_sends_the_named_tenants_to_the_candidate(self, env: Env):
        await env.run(DeployAction.START, "start", weight=0)
        result = await env.run(DeployAction.ROUTE, "wave-1", tenants=["acme", "globex"])
        assert result.succeeded
        assert env.target.calls[-1] == ("route_tenants", "v2", ["acme", "globex"])
        assert result.observed is not None and result.observed.tenants_on_candidate == ["acme", "globex"]
        assert result.observed.weights == {"v1": 100, "v2": 0}


class TestRollingUpdate:
    async def test_each_batch_starts_new_replicas_before_retiring_old_ones_and_weighs_by_count(self, env: Env):
        first = await env.run(DeployAction.ROLL, "batch-1", batch=1, batch_size=1)
        assert first.succeeded, first.reason
        assert env.target.calls == [("run_version", "v2", 1), ("scale", "v1", 1), ("shift", {"v2": 50, "v1": 50})]
        second = await env.run(DeployAction.ROLL, "batch-2", batch=2, batch_size=1)
        assert second.succeeded and env.target.replicas == {"v1": 0, "v2": 2}
        assert env.target.calls[-1] == ("shift", {"v2": 100, "v1": 0})

    async def test_restore_brings_stable_back_batch_by_batch_and_retires_the_candidate(self, env: Env):
        await env.run(DeployAction.ROLL, "batch-1", batch=1, batch_size=1)
        await env.run(DeployAction.ROLL, "batch-2", batch=2, batch_size=1)
        env.target.calls.clear()
        result = await env.run(DeployAction.RESTORE, "restore", batch_size=1, attestation=None)
        assert result.succeeded, result.reason
        # capacity never drops: each batch's stable replica starts before a candidate replica goes
        assert env.target.calls[:3] == [("run_version", "v1", 1), ("scale", "v2", 1), ("shift", {"v1": 50, "v2": 50})]
        assert env.target.replicas == {"v1": 2} and env.target.weights == {"v1": 100}
        assert ("retire", "v2") in env.target.calls


class TestFinalize:
    async def test_finalize_makes_the_candidate_stable_and_retires_the_old_version(self, env: Env):
        await env.run(DeployAction.START, "canary-10", weight=10)
        await env.run(DeployAction.ROUTE, "internal", tenants=["acme"])
        result = await env.run(DeployAction.FINALIZE, "finalize", weight=100)
        assert result.succeeded, result.reason
        assert env.target.calls[-4:] == [
            ("shift", {"v2": 100}),
            ("clear_tenant_routes",),
            ("retire", "v1"),
            ("set_stable", "v2", V2),
        ]
        assert result.observed is not None and result.observed.stable_version == "v2"
        assert result.observed.weights == {"v2": 100} and result.observed.tenants_on_candidate == []

    async def test_each_step_that_changed_the_environment_publishes_its_state_and_a_failed_one_does_not(self, env: Env):
        assert not (await env.run(DeployAction.FINALIZE, "finalize-early", weight=100)).succeeded
        assert env.published == []
        await env.run(DeployAction.START, "canary-10", weight=10)
        await env.run(DeployAction.FINALIZE, "finalize", weight=100)
        await env.run(DeployAction.MIGRATE, "migrate", environment="staging")
        assert env.published == [("shop", "production"), ("shop", "production")]


class TestMigrations:
    async def test_migrate_applies_the_candidates_migrations_and_reports_parity(self, env: Env):
        result = await env.run(DeployAction.MIGRATE, "migrate", environment="staging")
        assert result.succeeded and env.migrations.applied == [("staging", "rel-1")]
        assert "applied 0002_add_column.sql (already applied: 0001_init.sql)" in result.reason
        assert "parity: staging and production both run PostgreSQL 16.4" in result.reason
        assert env.target.calls == []


class TestEachStepOnce:
    async def test_a_redelivered_step_returns_its_first_outcome_and_touches_nothing(self, env: Env):
        first = await env.run(DeployAction.START, "canary-10", weight=10)
        calls = list(env.target.calls)
        again = await env.run(DeployAction.START, "canary-10", weight=10)
        assert again == first and env.target.calls == calls

    async def test_a_failed_step_is_not_retried_either(self, env: Env):
        first = await env.run(DeployAction.SHIFT, "canary-50", weight=50)
        await env.run(DeployAction.START, "canary-10", weight=10)
        again = await env.run(DeployAction.SHIFT, "canary-50", weight=50)
        assert not again.succeeded and again == first
        assert ("shift", {"v2": 50, "v1": 50}) not in env.target.calls


class TestProvenance:
    async def test_an_unsigned_artifact_is_refused_before_the_target_is_touched(self, env: Env):
        result = await env.run(DeployAction.START, "canary-10", weight=10, attestation=None)
        assert not result.succeeded and result.reason
        assert env.target.calls == [] and env.bundles.unpacked == []

    async def test_provenance_for_another_digest_is_refused_before_the_target_is_touched(self, env: Env):
        result = await env.run(DeployAction.START, "canary-10", weight=10, attestation=env.attestation(V1))
        assert not result.succeeded and f"is not the artifact {V2}" in result.reason
        assert env.target.calls == [] and env.bundles.unpacked == []

    async def test_a_tampered_signature_is_refused_before_the_target_is_touched(self, env: Env):
        forged = env.attestation(V2)
        forged["signatures"][0]["sig"] = forged["signatures"][0]["sig"][::-1]
        result = await env.run(DeployAction.FINALIZE, "finalize", weight=100, attestation=forged)
        assert not result.succeeded and env.target.calls == [] and env.bundles.unpacked == []
