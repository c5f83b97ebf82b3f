"""inventory-latency: how long stock stays reserved before the order confirms it, candidate against stable over
the same window. Advisory: a slower candidate is recorded, it does not stop the release.

Reads `latency_ms` (reservation → confirmation) of the `shop.inventory.confirmed.v1` events on the shop's business
topic, by time (no consumer group, nothing committed). The candidate is clearly worse when both hold:
- practically: its p95 is at least 25% and 5 ms above stable's (smaller moves are run-to-run noise of a process on
  a shared machine, and no shopper or stock level notices them);
- statistically: so many of the candidate's confirmations are slower than stable's p95 that, had both versions
  confirmed alike, a count this high would come up less than 1% of the time. The exact, distribution-free
  exceedance test gives that chance; it also allows for stable's p95 being an estimate.
With fewer than 20 confirmations of either version the p95 is little more than the maximum: inconclusive."""

from __future__ import annotations

from datetime import datetime
from math import comb

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError

from contracts.cloudevents import ContractError, decode, header_dict
from contracts.events import InventoryConfirmed
from releasegate_runtime.kafka import assigned_partitions, client_options
from releasegate_sdk import Measurement, Result, TransientError, VerificationRequest, Verifier
from releasegate_sdk.statistics import percentile
from releasegate_sdk.types import describe
from verifiers.shop_data import ShopSettings

MIN_SAMPLES = 20
SLOWER_RATIO = 1.25
SLOWER_MS = 5.0
ALPHA = 0.01
CANDIDATE_P95, SHARE = "inventory_confirm_latency_p95_ms", "inventory_confirms_slower_than_stable_p95"

verifier = Verifier(
    name="inventory-latency",
    version="1.0.0",
    services=["shop"],
    environments=["production"],
    kpis=[CANDIDATE_P95, SHARE],
)


async def read_window(settings: ShopSettings, topic: str, start: datetime, end: datetime) -> list[ConsumerRecord]:
    """The topic's records stamped within [start, end), found by time on every partition and read up to the end
    offsets at the time of asking."""
    # Subscribed without a group: the consumer is given every partition, and nothing is committed.
    consumer = AIOKafkaConsumer(topic, **client_options(settings), enable_auto_commit=False)
    try:
        await consumer.start()
        if not (partitions := await assigned_partitions(consumer)):
            raise TransientError(f"no partitions of {topic} assigned")
        firsts = await consumer.offsets_for_times({tp: int(start.timestamp() * 1000) for tp in partitions})
        ends = await consumer.end_offsets(partitions)
        todo = {tp: ends[tp] for tp, first in firsts.items() if first is not None and first.offset < ends[tp]}
        for tp in todo:
            consumer.seek(tp, firsts[tp].offset)
        records: list[ConsumerRecord] = []
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=500)
            records += [r for batch in batches.values() for r in batch if r.timestamp < end.timestamp() * 1000]
            todo = {tp: last for tp, last in todo.items() if await consumer.position(tp) < last}
        return records
    except KafkaError as exc:
        raise TransientError(f"shop events: {describe(exc)}") from None
    finally:
        await consumer.stop()


async def confirmation_latencies(req: VerificationRequest) -> dict[str, list[float]]:
    """Reservation → confirmation latencies (ms) in the request's environment during its window, per version: the
    candidate's (from the step's tenants only, when it names them) and, as the core verifier's baseline, all of
    the stable version's."""
    settings = ShopSettings()
    settings = settings.model_copy(update={"principal": settings.principal or verifier.service_name})
    found: dict[str, list[float]] = {v: [] for v in (req.candidate_version, req.stable_version) if v}
    for record in await read_window(settings, settings.shop_events_topic, req.window_start, req.window_end):
        if header_dict(record.headers).get("ce_type") != InventoryConfirmed.event_type:
            continue
        try:
            event = decode(record.headers, record.value).data
        except ContractError:
            continue  # the core verifier dead-letters malformed shop events; here they are simply not samples
        candidates_tenant = req.tenants is None or event.tenant in req.tenants
        if (
            event.environment == req.environment
            and event.version in found
            and event.latency_ms is not None
            and (candidates_tenant or event.version != req.candidate_version)
        ):
            found[event.version].append(event.latency_ms)
    return found


def exceedance_p_value(candidate: list[float], stable: list[float], threshold: float) -> float:
    """The chance, were both samples from one distribution, that at least as many candidate values as observed
    lie above `threshold`, the r-th largest stable value: the count follows the exceedance distribution
    P(K = j) = C(j+r-1, j) C(m-r+n-j, n-j) / C(m+n, n), whatever the latency distribution is."""
    n, m = len(candidate), len(stable)
    r, k = sum(v >= threshold for v in stable), sum(v > threshold for v in candidate)
    return sum(comb(j + r - 1, j) * comb(m - r + n - j, n - j) for j in range(k, n + 1)) / comb(m + n, n)


@verifier.check
async def check(req: VerificationRequest) -> Result:
    latencies = await confirmation_latencies(req)
    candidate, stable = latencies.get(req.candidate_version, []), latencies.get(req.stable_version or "", [])
    cand_p95, stable_p95 = percentile(candidate, 0.95), percentile(stable, 0.95)
    share = (sum(v > stable_p95 for v in candidate) / len(candidate)) if candidate and stable else None
    found = [
        Measurement(
            CANDIDATE_P95,
            cand_p95,
            unit="ms",
            baseline=stable_p95,
            samples=len(candidate),
            threshold=None if stable_p95 is None else max(stable_p95 * SLOWER_RATIO, stable_p95 + SLOWER_MS),
        ),
        Measurement(SHARE, share, unit="ratio", samples=len(candidate)),
    ]
    counts = f"{len(candidate)} confirmations of {req.candidate_version}, {len(stable)} of {req.stable_version}"
    if min(len(candidate), len(stable)) < MIN_SAMPLES:
        return Result.inconclusive(f"{counts} during the window; need {MIN_SAMPLES} of each", found)
    chance = exceedance_p_value(candidate, stable, stable_p95)
    p95s = f"p95 {cand_p95:.1f} ms against stable's {stable_p95:.1f} ms ({counts})"
    if cand_p95 >= found[0].threshold and chance < ALPHA:
        return Result.failed(
            f"reservations confirm clearly slower: {p95s}; {share:.0%} of the candidate's are "
            f"slower than stable's p95 (chance if alike {chance:.2g} < {ALPHA:g})",
            found,
        )
    return Result.passed(f"no clear slowdown: {p95s}", found)
