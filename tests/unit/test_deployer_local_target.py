"""The `local` deployment target behind the port: replicas are processes on HAProxy slots; what `run_version`,
`scale`, `versions` and `retire` do to them (instances and HAProxy in memory, the launcher a recording fake)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from releasegate_platform.local_target import Instance
from releasegate_platform.targets.local import LocalDeploymentTarget
from releasegate_platform.targets.port import TargetError

ALIVE, GONE = os.getpid(), None


class RecordingHAProxy:
    def __init__(self) -> None:
        self.pointed: list[tuple[str, str, int]] = []

    async def point(self, backend: str, slot: str, port: int) -> None:
        self.pointed.append((backend, slot, port))


class InMemoryLocal:
    """The parts of LocalTarget the port adapter uses, over a list of instances."""

    def __init__(self, instances: list[Instance]) -> None:
        self.instances, self.haproxy, self.stopped, self.scraped = instances, RecordingHAProxy(), [], []

    async def live(self, service: str, environment: str) -> list[Instance]:
        return [i for i in self.instances if i.state != "stopped"]

    async def stop(self, inst: Instance) -> None:
        self.stopped.append(inst.slot)
        self.instances = [replace(i, state="stopped") if i.id == inst.id else i for i in self.instances]

    async def stable(self, service: str, environment: str) -> tuple[str, str] | None:
        return ("v1", "sha256:" + "1" * 64)

    def register_scrape(self, inst: Instance) -> None:
        self.scraped.append(inst.slot)


def instance(n: int, version: str, pid: int | None = ALIVE, state: str = "serving") -> Instance:
    digest = "sha256:" + version[-1] * 64
    return Instance(n, "shop", "production", version, digest, f"s{n}", 20100 + n, pid, state)


@pytest.fixture
def started() -> list[tuple]:
    return []


def target(instances: list[Instance], started: list[tuple]) -> tuple[LocalDeploymentTarget, InMemoryLocal]:
    local = InMemoryLocal(instances)

    async def start(service, environment, version, digest, release_id):
        started.append((version, digest, release_id))
        inst = instance(len(local.instances) + 1, version)
        local.instances.append(inst)
        return inst

    return LocalDeploymentTarget(local, start), local  # type: ignore[arg-type]


class TestRunVersion:
    async def test_starts_only_the_missing_replicas_and_repoints_the_survivors(self, started):
        adapter, local = target([instance(1, "v1"), instance(2, "v2")], started)
        assert await adapter.run_version("shop", "production", "v2", "sha256:" + "2" * 64, "rel-1", 2) == 2
        assert started == [("v2", "sha256:" + "2" * 64, "rel-1")]
        assert local.haproxy.pointed == [("shop_production", "s2", 20102)] and local.scraped == ["s2"]

    async def test_instances_whose_process_is_gone_are_retired_and_replaced(self, started):
        adapter, local = target([instance(1, "v1", pid=GONE), instance(2, "v1", state="starting", pid=GONE)], started)
        assert await adapter.run_version("shop", "production", "v1", "sha256:" + "1" * 64, None, 1) == 1
        assert local.stopped == ["s1", "s2"] and len(started) == 1

    async def test_never_stops_replicas_beyond_the_count(self, started):
        adapter, local = target([instance(1, "v1"), instance(2, "v1")], started)
        assert await adapter.run_version("shop", "production", "v1", "sha256:" + "1" * 64, None, 1) == 2
        assert local.stopped == [] and started == []


class TestScaleAndRetire:
    async def test_scaling_down_stops_the_newest_replicas_of_that_version_only(self, started):
        adapter, local = target([instance(1, "v1"), instance(2, "v1"), instance(3, "v2")], started)
        await adapter.scale("shop", "production", "v1", 1)
        assert local.stopped == ["s2"]
        assert await adapter.versions("shop", "production") == {"v1": 1, "v2": 1}

    async def test_scaling_up_starts_the_digest_that_already_runs(self, started):
        adapter, _ = target([instance(1, "v2")], started)
        await adapter.scale("shop", "production", "v2", 2)
        assert started == [("v2", "sha256:" + "2" * 64, None)]

    async def test_a_version_that_does_not_run_cannot_be_scaled_up(self, started):
        adapter, _ = target([instance(1, "v1")], started)
        with pytest.raises(TargetError, match="v3 does not run in production"):
            await adapter.scale("shop", "production", "v3", 1)

    async def test_versions_counts_ready_replicas_and_names_versions_with_none_ready(self, started):
        adapter, _ = target(
            [instance(1, "v1"), instance(2, "v2", pid=GONE), instance(3, "v2", state="starting")], started
        )
        assert await adapter.versions("shop", "production") == {"v1": 1, "v2": 0}

    async def test_retire_stops_every_instance_of_the_version_whatever_its_state(self, started):
        adapter, local = target([instance(1, "v1"), instance(2, "v2", pid=GONE), instance(3, "v2")], started)
        await adapter.retire("shop", "production", "v2")
        assert local.stopped == ["s2", "s3"]
        assert await adapter.versions("shop", "production") == {"v1": 1}


class TestWithoutALauncher:
    async def test_a_service_given_no_launcher_never_starts_an_instance(self):
        local = InMemoryLocal([instance(1, "v1", pid=GONE)])
        adapter = LocalDeploymentTarget(local, None)  # type: ignore[arg-type]  # as the rollback service builds it
        with pytest.raises(TargetError, match="may not start one"):
            await adapter.run_version("shop", "production", "v1", "sha256:" + "1" * 64, None, 1)
        with pytest.raises(TargetError, match="may not start one"):
            await adapter.scale("shop", "production", "v1", 1)
