"""Order replay after a restore: invalid events are skipped and listed, never fatal; a topic that may have lost
events since the backup point to retention is refused before anything is restored."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from contracts.cloudevents import Envelope, encode
from contracts.events import CheckoutSucceeded, OrderPlaced
from releasegate_platform import replay
from releasegate_platform.catalog import Catalog, CatalogError
from releasegate_platform.replay import (
    LISTED,
    EventLog,
    InvalidEvent,
    ReplayerRefused,
    ReplayError,
    Scan,
    classify,
    load_replayer,
    retention_gaps,
)
from releasegate_runtime.settings import REPO_ROOT, ServiceSettings
from shop.replay import ShopReplayer


@dataclass
class FakeRecord:
    partition: int
    offset: int
    headers: Any
    value: bytes | None


def order(**changes: Any) -> dict[str, Any]:
    return {
        "version": "v1",
        "environment": "production",
        "tenant": "acme",
        "instance": "production-a-v1",
        "checkout_id": "c-1",
        "order_id": str(uuid.uuid4()),
        "amount_cents": 1900,
        "currency": "USD",
        "items": [{"sku": "TEE-001", "qty": 1}],
        "customer": "ann@acme.test",
        "payment_ref": "auth-1",
    } | changes


def record(
    data: dict[str, Any] | bytes,
    *,
    offset: int = 0,
    source: str = "shop/production/production-a-v1",
    event_type: str = OrderPlaced.event_type,
) -> FakeRecord:
    """A record as the shop sends it; `data` is put in the value as it is, valid or not."""
    _, value, headers = encode(Envelope.new(OrderPlaced(**order()), source))
    value = data if isinstance(data, bytes) else json.dumps(data).encode()
    headers = [(k, event_type.encode() if k == "ce_type" else v) for k, v in headers]
    return FakeRecord(partition=1, offset=offset, headers=headers, value=value)


def scan(*records: FakeRecord) -> Scan:
    s = Scan(ShopReplayer(), "shop", "production", "shop.events")
    for r in records:
        s.take(r)
    return s


class TestInvalidEventsAreSkippedAndListed:
    def test_one_bad_order_among_good_ones_is_listed_with_its_offset_and_the_good_ones_are_kept(self):
        good = [order(), order()]
        s = scan(
            record(good[0], offset=10), record(order(order_id="not-a-uuid"), offset=11), record(good[1], offset=12)
        )
        assert [o.order_id for o in s.events] == [good[0]["order_id"], good[1]["order_id"]]
        assert s.invalid.total == 1
        [bad] = s.invalid.entries
        assert (bad["partition"], bad["offset"]) == (1, 11) and "not a UUID" in bad["reason"]

    @pytest.mark.parametrize(
        "data, why",
        [
            (order(customer="ann\x00@acme.test"), "NUL"),
            (order(items=[{"sku": "TEE\x00", "qty": 1}]), "NUL"),
            (order(amount_cents="lots"), "amount_cents"),
            (order(items=[{"sku": "TEE-001", "qty": -3}]), "basket line"),
            (order(items=[{"sku": "TEE-001", "qty": "1"}]), "basket line"),
            (order(tenant="acme corp"), "tenant"),
            (order(order_id=None), "order_id"),
            (b"\xff\xfe not json", "UTF-8"),
            (b"[" * 100_000, ""),
            (json.dumps(order()).encode()[:-5], "JSON"),
        ],
        ids=[
            "nul-in-customer",
            "nul-in-item",
            "wrong-type",
            "negative-qty",
            "qty-as-text",
            "tenant-with-space",
            "no-order-id",
            "not-utf8",
            "deeply-nested",
            "truncated",
        ],
    )
    def test_each_kind_of_bad_event_is_skipped_with_a_reason(self, data, why):
        s = scan(record(data, offset=7))
        assert s.events == [] and s.invalid.total == 1
        assert why in s.invalid.entries[0]["reason"] and s.invalid.entries[0]["offset"] == 7

    def test_an_unknown_event_type_is_listed(self):
        s = scan(record(order(), event_type="shop.order.placed.v9"))
        assert s.invalid.total == 1 and "unknown event type" in s.invalid.entries[0]["reason"]

    def test_an_order_from_another_source_than_the_shop_is_refused(self):
        s = scan(record(order(), source="attacker/production/x"))
        assert s.events == [] and "not the shop's production instances" in s.invalid.entries[0]["reason"]

    def test_a_staging_instance_claiming_a_production_order_is_refused(self):
        s = scan(record(order(), source="shop/staging/staging-a-v1"))
        assert s.events == [] and s.invalid.total == 1

    def test_other_environments_and_other_event_types_are_not_orders_to_replay_nor_errors(self):
        other = record(order(environment="staging"), source="shop/staging/staging-a-v1")
        succeeded = record(order(), event_type=CheckoutSucceeded.event_type)
        s = scan(other, succeeded)
        assert s.events == [] and s.invalid.total == 0 and s.records == 2

    def test_the_report_lists_a_bounded_number_and_counts_them_all(self):
        s = scan(*(record(order(order_id="bad"), offset=i) for i in range(LISTED + 50)))
        assert s.invalid.total == LISTED + 50 and len(s.invalid.entries) == LISTED

    def test_classify_raises_only_invalid_event_whatever_the_headers(self):
        for headers in (None, [], [("ce_specversion", b"1.0")], {"ce_type": b"\x00" * 10}):
            with pytest.raises(InvalidEvent):
                classify(ShopReplayer(), "shop", headers, b"{}", "production")


class TestRetentionBeforeReplay:
    def test_a_partition_never_truncated_holds_everything(self):
        assert retention_gaps({0: 0}, {0: 100}, {0: 40}) == []

    def test_an_event_older_than_the_backup_point_still_retained_proves_nothing_newer_was_deleted(self):
        assert retention_gaps({0: 500}, {0: 900}, {0: 501}) == []

    def test_a_quiet_partition_whose_retained_events_are_all_older_is_complete(self):
        assert retention_gaps({0: 500}, {0: 900}, {0: None}) == []

    def test_the_earliest_retained_event_already_after_the_backup_point_is_a_gap(self):
        [gap] = retention_gaps({0: 0, 1: 500}, {0: 10, 1: 900}, {0: 3, 1: 500})
        assert gap.startswith("partition 1:") and "deleted by retention" in gap

    def test_a_partition_emptied_by_retention_cannot_prove_anything(self):
        [gap] = retention_gaps({2: 900}, {2: 900}, {2: None})
        assert "none is retained" in gap


class StalledTopic:
    """A broker that accepts the connection and then never answers."""

    def __init__(self, settings: ServiceSettings, topic: str) -> None:
        pass

    async def __aenter__(self) -> StalledTopic:
        return self

    async def __aexit__(self, *_: object) -> None:
        pass

    async def scan(self, since: datetime, scan: Scan) -> Scan:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def offsets(self, since: datetime):
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 19092)]")


class TestReadingHasADeadline:
    async def test_a_topic_that_stops_answering_fails_the_replay_clearly_instead_of_hanging(self, monkeypatch):
        monkeypatch.setattr(replay, "_Topic", StalledTopic)
        monkeypatch.setattr(replay, "READ_SECONDS", 0.05)
        with pytest.raises(ReplayError, match="shop.events could not be read within 0.05s"):
            await EventLog(ServiceSettings(), "shop.events").events_since(
                ShopReplayer(), "shop", "production", datetime(2026, 11, 27, tzinfo=UTC)
            )

    async def test_a_broker_error_is_a_replay_error_with_its_reason(self, monkeypatch):
        monkeypatch.setattr(replay, "_Topic", StalledTopic)
        with pytest.raises(ReplayError, match="cannot be read: KafkaConnectionError"):
            await EventLog(ServiceSettings(), "shop.events").check_replayable(datetime(2026, 11, 27, tzinfo=UTC))


class TestTheReplayerIsTheOneTheCatalogNames:
    def entry(self, tmp_path, replayer: str | None):
        text = (REPO_ROOT / "catalog" / "shop.yaml").read_text()
        line = "  replayer: shop.replay:ShopReplayer"
        assert line in text
        (tmp_path / "shop.yaml").write_text(text.replace(line, "" if replayer is None else f"  replayer: {replayer}"))
        return Catalog(tmp_path).get("shop")

    def test_the_shops_catalog_entry_names_the_shops_replayer(self):
        assert isinstance(load_replayer(Catalog(REPO_ROOT / "catalog").get("shop")), ShopReplayer)

    @pytest.mark.parametrize(
        "target",
        ["services.rollback.adapters:PgServiceDatabase", "os:system", "shopx.replay:ShopReplayer", "shop.replay"],
    )
    def test_a_replayer_outside_the_services_own_package_is_refused_by_the_catalog(self, tmp_path, target):
        with pytest.raises(CatalogError, match="dr.replayer"):
            self.entry(tmp_path, target)

    def test_a_replayer_named_by_a_catalog_entry_that_skipped_validation_is_refused_at_load(self, tmp_path):
        entry = self.entry(tmp_path, None)
        forged = entry.model_copy(update={"dr": entry.dr.model_copy(update={"replayer": "os:system"})})
        with pytest.raises(ReplayerRefused, match="not a `module:Class` in the service's own package 'shop'"):
            load_replayer(forged)

    def test_a_name_in_the_package_that_is_not_a_replayer_class_is_refused(self, tmp_path):
        for target, why in (("shop.replay:MAX_QTY", "not a replayer class"), ("shop.replay:Nope", "cannot be loaded")):
            entry = self.entry(tmp_path, target)
            with pytest.raises(ReplayerRefused, match=why):
                load_replayer(entry)

    def test_a_service_without_a_replayer_has_no_data_restore(self, tmp_path):
        with pytest.raises(ReplayerRefused, match="names no dr.replayer"):
            load_replayer(self.entry(tmp_path, None))
