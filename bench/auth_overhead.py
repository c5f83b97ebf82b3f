"""Benchmark on the running local stack (`make bench-auth`): what the authenticated control plane costs per hop.

A hop is what the coordinator does between services: a command encoded as a CloudEvent, produced to Kafka,
consumed, decoded and validated. Measured in the same run, interleaved, over the same broker:
  1. without message authentication: the record travels over SASL/SCRAM connections and the broker's ACL check,
     nothing else (a principal provisioned for the benchmark, with its own topic);
  2. with message authentication: the same, plus what releasegate adds to a deploy command: the sender signs a
     step grant (ed25519 over the command's bound fields) and the receiver verifies it;
  3. the same hop as the broker's super user, which skips the ACL check (to show what the authorizer costs).
Also the signing and verification alone, in process. Prints figures and ratios; asserts nothing."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from securesystemslib.signer import CryptoSigner

from contracts.cloudevents import Envelope, decode, encode
from contracts.events import DeployAction, DeployRequested
from releasegate_runtime import bus_admin, grants
from releasegate_runtime.bus import Principal
from releasegate_runtime.kafka import client_options
from releasegate_runtime.settings import ServiceSettings

LIFETIME = timedelta(minutes=10)


def q(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def command() -> DeployRequested:
    return DeployRequested(
        release_id=f"bench-{uuid.uuid4().hex[:8]}",
        step_id="canary-10",
        service="shop",
        version="v2",
        digest="sha256:" + "a" * 64,
        environment="production",
        action=DeployAction.SHIFT,
        weight=10,
    )


class Hop:
    """A producer and a consumer of one topic as one principal."""

    def __init__(self, settings: ServiceSettings, topic: str) -> None:
        options = client_options(settings)
        self.producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True, linger_ms=0)
        self.consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, fetch_max_wait_ms=500)
        self.tp = TopicPartition(topic, 0)

    async def start(self) -> Hop:
        await self.producer.start()
        await self.consumer.start()
        self.consumer.assign([self.tp])
        await self.consumer.seek_to_end(self.tp)
        return self

    async def stop(self) -> None:
        await self.producer.stop()
        await self.consumer.stop()

    async def once(self, signer: CryptoSigner | None, key) -> float:
        t0 = time.perf_counter()
        cmd = command()
        if signer is not None:
            cmd = grants.with_grant(signer, cmd, issued_at=datetime.now(UTC), lifetime=LIFETIME)
        key_bytes, value, headers = encode(Envelope.new(cmd, "bench", cmd.release_id))
        await self.producer.send_and_wait(self.tp.topic, value, key=key_bytes, headers=headers, partition=0)
        mine = None
        while mine is None:  # the hop ends when this command is back (other hops write the same topic)
            records = (await self.consumer.getmany(self.tp, timeout_ms=1000)).get(self.tp) or []
            mine = next((r for r in records if r.key == key_bytes), None)
        received = decode(mine.headers, mine.value).data
        if signer is not None:
            why = grants.verify_grant(key, received, datetime.now(UTC))
            if why is not None:
                raise SystemExit(f"benchmark broken: {why}")
        return (time.perf_counter() - t0) * 1000


def in_process(signer: CryptoSigner, n: int) -> tuple[float, float]:
    """Microseconds to sign one grant, and to verify one."""
    cmd = command()
    t0 = time.perf_counter()
    signed = [grants.with_grant(signer, cmd, issued_at=datetime.now(UTC), lifetime=LIFETIME) for _ in range(n)]
    t1 = time.perf_counter()
    now = datetime.now(UTC)
    for s in signed:
        grants.verify_grant(signer.public_key, s, now)
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


async def main(round_trips: int) -> None:
    settings = ServiceSettings()
    topic, name = f"bench.auth-{uuid.uuid4().hex[:8]}", "bench-auth"
    admin = bus_admin.admin_client(settings.kafka_bootstrap, settings.secrets_dir, settings.kafka_ca_file)
    principal = Principal(name, "benchmark", produce=(topic,), consume=(topic,), groups=(), template=None)
    await asyncio.to_thread(bus_admin.register, principal, admin, settings.secrets_dir)
    signer = CryptoSigner.generate_ed25519()
    acl_hop = await Hop(settings.model_copy(update={"principal": name}), topic).start()
    super_hop = await Hop(settings.model_copy(update={"principal": "admin"}), topic).start()
    samples: dict[str, list[float]] = {"plain": [], "signed": [], "super": []}
    try:
        for _ in range(20):  # warm up connections and metadata
            await acl_hop.once(None, None)
            await super_hop.once(None, None)
        for _ in range(round_trips):  # interleaved, so drift in the machine's load hits all three alike
            samples["plain"].append(await acl_hop.once(None, None))
            samples["signed"].append(await acl_hop.once(signer, signer.public_key))
            samples["super"].append(await super_hop.once(None, None))
    finally:
        await acl_hop.stop()
        await super_hop.stop()
        await asyncio.to_thread(lambda: admin.delete_topics([topic])[topic].result(30))
    sign_us, verify_us = in_process(signer, 2000)

    plain, signed, sup = (statistics.median(samples[k]) for k in ("plain", "signed", "super"))
    print(
        f"\nAuthenticated hop: CloudEvent deploy command produced → consumed → decoded (n={round_trips} each, "
        "interleaved)"
    )
    print(f"   {'':<58}{'median ms':>10}{'p95 ms':>9}")
    rows = [
        ("SASL/SCRAM + ACLs, no message authentication", "plain"),
        ("SASL/SCRAM + ACLs + step grant signed and verified", "signed"),
        ("super user (no ACL check), no message authentication", "super"),
    ]
    for label, key in rows:
        print(f"   {label:<58}{statistics.median(samples[key]):>10.2f}{q(samples[key], 0.95):>9.2f}")
    print(f"   message authentication adds {signed - plain:+.3f} ms per hop (median; ratio {signed / plain:.2f}x)")
    print(f"   the ACL check adds {plain - sup:+.3f} ms per hop (median; ratio {plain / sup:.2f}x)")
    print(f"   in process: sign a step grant {sign_us:.0f} µs, verify it {verify_us:.0f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--round-trips", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.round_trips))
