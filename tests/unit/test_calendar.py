"""Release calendar: freeze windows, recurring windows and business hours, judged at an instant the test picks."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.gatekeeper.calendar import Calendar, CalendarError, Timing

REPO = Path(__file__).resolve().parents[2]
NEW_YORK, BERLIN = ZoneInfo("America/New_York"), ZoneInfo("Europe/Berlin")

RETAIL = Calendar.from_yaml("""
version: 3
freezes:
  - name: black-friday-cyber-monday-2026
    timezone: America/New_York
    start: 2026-11-26T00:00
    end: 2026-12-01T06:00
    blocks: [checkout, payment, pricing, erp-sync]
  - name: christmas-boxing-day-2026
    timezone: Europe/London
    start: 2026-12-21T00:00
    end: 2026-12-29T06:00
    blocks: [checkout, payment]
recurring:
  - name: month-end-close
    timezone: Europe/Berlin
    cron: "0 18 L * *"
    duration_hours: 30
    blocks: [erp-sync, pricing]
business_hours:
  - tiers: [1]
    timezone: Europe/Berlin
    days: [mon, tue, wed, thu]
    start: "09:00"
    end: "16:00"
""")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def judge(now: datetime, *domains: str, tier: int = 3, calendar: Calendar = RETAIL) -> Timing:
    """Tier 3 has no business hours, so a test about freezes sees only freezes."""
    return calendar.timing(now, tier=tier, domains=list(domains or ["checkout"]))


def daily_window(cron: str, hours: float) -> Calendar:
    return Calendar.from_yaml(f"""
version: 1
recurring:
  - {{name: nightly-batch, timezone: Europe/Berlin, cron: "{cron}", duration_hours: {hours}, blocks: [erp-sync]}}
""")


class TestFreezeWindows:
    def test_checkout_change_is_frozen_on_black_friday_in_new_york_time(self):
        timing = judge(datetime(2026, 11, 27, 10, 0, tzinfo=NEW_YORK), "checkout")
        assert timing.frozen and timing.freeze_name == "black-friday-cyber-monday-2026"
        assert timing.freeze_ends_at == utc(2026, 12, 1, 11, 0)
        assert timing.frozen_domains == ("checkout",)
        assert timing.reasons == (
            "checkout changes are frozen by black-friday-cyber-monday-2026 until 2026-12-01 06:00 America/New_York",
        )

    def test_freeze_starts_at_midnight_new_york_time_not_midnight_utc(self):
        assert not judge(utc(2026, 11, 26, 4, 59, 59)).frozen
        assert judge(utc(2026, 11, 26, 5, 0)).frozen

    def test_freeze_end_itself_is_no_longer_frozen(self):
        assert judge(utc(2026, 12, 1, 10, 59, 59)).frozen
        timing = judge(utc(2026, 12, 1, 11, 0))
        assert not timing.frozen and timing.freeze_name is None and timing.retry_at is None

    def test_the_same_instant_given_on_a_berlin_clock_gets_the_same_answer(self):
        assert not judge(datetime(2026, 11, 26, 5, 59, tzinfo=BERLIN)).frozen
        assert judge(datetime(2026, 11, 26, 6, 0, tzinfo=BERLIN)).frozen

    def test_content_only_change_is_not_frozen_on_black_friday(self):
        timing = judge(utc(2026, 11, 27, 15, 0), "content")
        assert not timing.frozen and timing.frozen_domains == () and timing.reasons == ()

    def test_only_the_services_domains_the_freeze_blocks_are_reported(self):
        timing = judge(utc(2026, 11, 27, 15, 0), "content", "payment", "checkout")
        assert timing.frozen_domains == ("payment", "checkout")
        assert timing.reasons[0].startswith("payment and checkout changes are frozen by black-friday")

    def test_christmas_freeze_is_read_on_the_london_clock(self):
        assert not judge(utc(2026, 12, 20, 23, 59)).frozen
        timing = judge(utc(2026, 12, 21, 0, 0))
        assert timing.freeze_name == "christmas-boxing-day-2026"
        assert timing.freeze_ends_at == utc(2026, 12, 29, 6, 0)

    def test_overlapping_freezes_report_the_one_ending_last(self):
        # Cyber Monday evening in Berlin: the month-end close has begun and outlasts Black Friday's freeze.
        timing = judge(datetime(2026, 11, 30, 20, 0, tzinfo=BERLIN), "checkout", "pricing")
        assert timing.freeze_name == "month-end-close"
        assert timing.freeze_ends_at == utc(2026, 12, 1, 23, 0)
        assert timing.frozen_domains == ("pricing",)
        assert timing.retry_at == utc(2026, 12, 1, 23, 0)
        assert timing.reasons == (
            "checkout and pricing changes are frozen by black-friday-cyber-monday-2026 "
            "until 2026-12-01 06:00 America/New_York",
            "pricing changes are frozen by month-end-close until 2026-12-02 00:00 Europe/Berlin",
        )


class TestRecurringWindows:
    def test_month_end_close_opens_at_six_pm_berlin_time_on_the_last_day(self):
        assert not judge(utc(2026, 10, 31, 16, 59), "erp-sync").frozen
        timing = judge(utc(2026, 10, 31, 17, 0), "erp-sync")
        assert timing.freeze_name == "month-end-close"
        assert timing.reasons == (
            "erp-sync changes are frozen by month-end-close until 2026-11-02 00:00 Europe/Berlin",
        )

    def test_month_end_close_is_over_at_midnight_starting_the_second(self):
        assert judge(utc(2026, 12, 1, 22, 59), "erp-sync").frozen
        assert not judge(utc(2026, 12, 1, 23, 0), "erp-sync").frozen

    def test_mid_month_erp_sync_change_is_not_frozen(self):
        assert not judge(utc(2026, 11, 16, 12, 0), "erp-sync").frozen

    def test_february_closes_on_the_twenty_eighth(self):
        assert judge(utc(2026, 2, 28, 17, 0), "pricing").frozen
        assert not judge(utc(2026, 2, 27, 17, 0), "pricing").frozen

    def test_month_end_close_follows_berlin_summer_time_in_the_week_the_clocks_go_forward(self):
        # Summer time starts Sun 29 March 2026: six pm in Berlin on the 31st is 16:00 UTC, in January 17:00 UTC.
        assert not judge(utc(2026, 3, 31, 15, 59), "erp-sync").frozen
        assert judge(utc(2026, 3, 31, 16, 0), "erp-sync").frozen
        assert not judge(utc(2026, 1, 31, 16, 0), "erp-sync").frozen
        assert judge(utc(2026, 1, 31, 17, 0), "erp-sync").frozen

    def test_daily_window_opens_at_the_same_berlin_hour_before_and_after_the_switch(self):
        evening = daily_window("0 18 * * *", 2)
        assert not judge(utc(2026, 3, 27, 16, 30), "erp-sync", calendar=evening).frozen  # Fri 17:30 CET
        assert judge(utc(2026, 3, 27, 18, 30), "erp-sync", calendar=evening).frozen  # Fri 19:30 CET
        assert judge(utc(2026, 3, 30, 16, 30), "erp-sync", calendar=evening).frozen  # Mon 18:30 CEST
        assert not judge(utc(2026, 3, 30, 18, 30), "erp-sync", calendar=evening).frozen  # Mon 20:30 CEST

    def test_duration_counts_elapsed_hours_across_the_switch(self):
        weekend = daily_window("0 18 * * sat", 30)
        timing = judge(utc(2026, 3, 29, 12, 0), "erp-sync", calendar=weekend)
        # Sat 18:00 CET is 17:00 UTC; 30 hours later the Berlin clock, an hour ahead now, shows Mon 01:00.
        assert timing.freeze_ends_at == utc(2026, 3, 29, 23, 0)
        assert timing.reasons[0].endswith("until 2026-03-30 01:00 Europe/Berlin")

    def test_window_scheduled_in_the_skipped_hour_opens_when_the_clocks_jump(self):
        nightly = daily_window("30 2 * * *", 1)
        assert not judge(utc(2026, 3, 29, 0, 59), "erp-sync", calendar=nightly).frozen  # 01:59 CET
        timing = judge(utc(2026, 3, 29, 1, 0), "erp-sync", calendar=nightly)  # 03:00 CEST
        assert timing.frozen and timing.freeze_ends_at == utc(2026, 3, 29, 2, 0)

    def test_window_scheduled_in_the_repeated_hour_opens_on_both_passes_of_the_clock(self):
        # 02:30 happens twice on Sun 25 October 2026; freezing twice is the safe reading of the schedule.
        nightly = daily_window("30 2 * * *", 0.5)
        assert judge(utc(2026, 10, 25, 0, 45), "erp-sync", calendar=nightly).frozen  # 02:45 CEST
        assert not judge(utc(2026, 10, 25, 1, 5), "erp-sync", calendar=nightly).frozen  # 02:05 CET
        assert judge(utc(2026, 10, 25, 1, 45), "erp-sync", calendar=nightly).frozen  # 02:45 CET


class TestBusinessHours:
    def test_tier_1_release_inside_hours_may_run(self):
        timing = judge(datetime(2026, 11, 17, 10, 0, tzinfo=BERLIN), "content", tier=1)
        assert timing.inside_business_hours and timing.next_business_open is None
        assert timing.retry_at is None and timing.reasons == () and timing.business_hours_reason is None

    def test_opening_time_is_inside_and_closing_time_is_outside(self):
        assert judge(datetime(2026, 11, 16, 9, 0, tzinfo=BERLIN), "content", tier=1).inside_business_hours
        assert judge(datetime(2026, 11, 19, 15, 59, 59, tzinfo=BERLIN), "content", tier=1).inside_business_hours
        timing = judge(datetime(2026, 11, 19, 16, 0, tzinfo=BERLIN), "content", tier=1)
        assert not timing.inside_business_hours
        assert timing.next_business_open == datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN)

    def test_early_morning_release_waits_for_nine_the_same_day(self):
        timing = judge(datetime(2026, 11, 17, 8, 59, tzinfo=BERLIN), "content", tier=1)
        assert timing.next_business_open == utc(2026, 11, 17, 8, 0)

    def test_friday_release_waits_over_the_weekend_until_monday_morning(self):
        timing = judge(datetime(2026, 11, 20, 10, 0, tzinfo=BERLIN), "content", tier=1)
        assert not timing.inside_business_hours and not timing.frozen
        assert timing.next_business_open == utc(2026, 11, 23, 8, 0)
        assert timing.retry_at == timing.next_business_open
        assert timing.reasons == (
            "tier 1 releases to production run Mon–Thu 09:00–16:00 Europe/Berlin; "
            "next window opens Mon 2026-11-23 09:00 Europe/Berlin",
        )
        assert timing.business_hours_reason == timing.reasons[0]

    def test_next_opening_after_the_spring_switch_is_nine_berlin_summer_time(self):
        timing = judge(utc(2026, 3, 27, 12, 0), "content", tier=1)
        assert timing.next_business_open == utc(2026, 3, 30, 7, 0)

    def test_next_opening_after_the_autumn_switch_is_nine_berlin_winter_time(self):
        timing = judge(utc(2026, 10, 23, 12, 0), "content", tier=1)
        assert timing.next_business_open == utc(2026, 10, 26, 8, 0)

    def test_tiers_without_a_rule_release_at_any_hour(self):
        timing = judge(datetime(2026, 11, 21, 3, 0, tzinfo=BERLIN), "content", tier=2)
        assert timing.inside_business_hours and timing.next_business_open is None and timing.retry_at is None

    def test_several_rules_for_one_tier_add_up(self):
        calendar = Calendar.from_yaml("""
version: 1
business_hours:
  - {tiers: [1], timezone: Europe/Berlin, days: [mon, tue, wed, thu], start: "09:00", end: "16:00"}
  - {tiers: [1, 2], timezone: Europe/Berlin, days: [fri], start: "09:00", end: "12:00"}
""")
        assert judge(
            datetime(2026, 11, 20, 10, 0, tzinfo=BERLIN), "content", tier=1, calendar=calendar
        ).inside_business_hours
        timing = judge(datetime(2026, 11, 20, 13, 0, tzinfo=BERLIN), "content", tier=1, calendar=calendar)
        assert timing.next_business_open == utc(2026, 11, 23, 8, 0)
        assert timing.reasons[0].startswith(
            "tier 1 releases to production run Mon–Thu 09:00–16:00 Europe/Berlin or Fri 09:00–12:00 Europe/Berlin;"
        )


class TestRetryAt:
    def test_retry_is_the_freeze_end_when_it_comes_after_the_business_opening(self):
        # Saturday of the Black Friday weekend: hours open Monday, the freeze ends Tuesday noon Berlin time.
        timing = judge(utc(2026, 11, 28, 12, 0), "checkout", tier=1)
        assert timing.next_business_open == utc(2026, 11, 30, 8, 0)
        assert timing.freeze_ends_at == utc(2026, 12, 1, 11, 0)
        assert timing.retry_at == utc(2026, 12, 1, 11, 0)

    def test_retry_is_the_business_opening_when_it_comes_after_the_freeze_end(self):
        calendar = Calendar.from_yaml("""
version: 1
freezes:
  - {name: stocktake, timezone: Europe/Berlin, start: 2026-11-20T12:00, end: 2026-11-21T12:00, blocks: [erp-sync]}
business_hours:
  - {tiers: [1], timezone: Europe/Berlin, days: [mon, tue, wed, thu], start: "09:00", end: "16:00"}
""")
        timing = judge(datetime(2026, 11, 20, 17, 0, tzinfo=BERLIN), "erp-sync", tier=1, calendar=calendar)
        assert timing.freeze_ends_at == utc(2026, 11, 21, 11, 0)
        assert timing.retry_at == timing.next_business_open == utc(2026, 11, 23, 8, 0)

    def test_freeze_ending_before_opening_time_waits_for_that_mornings_opening(self):
        # The Christmas freeze ends Tue 29 Dec at 06:00 London, 07:00 Berlin: still before tier-1 hours open.
        timing = judge(utc(2026, 12, 26, 12, 0), "checkout", tier=1)
        assert timing.freeze_ends_at == utc(2026, 12, 29, 6, 0)
        assert timing.next_business_open == utc(2026, 12, 28, 8, 0)
        assert timing.retry_at == utc(2026, 12, 29, 8, 0)
        assert timing.reasons[-1] == (
            "all windows taken together, the release can run from Tue 2026-12-29 09:00 Europe/Berlin"
        )

    def test_back_to_back_freezes_retry_when_the_last_one_ends(self):
        calendar = Calendar.from_yaml("""
version: 1
freezes:
  - {name: launch, timezone: UTC, start: 2026-06-01T00:00, end: 2026-06-02T00:00, blocks: [checkout]}
  - {name: summer-sale, timezone: UTC, start: 2026-06-02T00:00, end: 2026-06-05T00:00, blocks: [checkout]}
""")
        timing = judge(utc(2026, 6, 1, 12, 0), "checkout", calendar=calendar)
        assert timing.freeze_name == "launch"
        assert timing.retry_at == utc(2026, 6, 5, 0, 0)

    def test_nothing_in_the_way_means_no_retry(self):
        assert judge(datetime(2026, 11, 17, 10, 0, tzinfo=BERLIN), "checkout", tier=1).retry_at is None


class TestNaiveTimes:
    def test_naive_now_is_rejected(self):
        with pytest.raises(ValueError, match="timezone-aware"):
            RETAIL.timing(datetime(2026, 11, 27, 12, 0), tier=1, domains=["checkout"])

    def test_policy_input_rejects_a_naive_now(self):
        timing = judge(utc(2026, 11, 27, 12, 0))
        with pytest.raises(ValueError, match="timezone-aware"):
            timing.as_input(datetime(2026, 11, 27, 12, 0))


class TestPolicyInput:
    def test_policy_input_carries_every_time_as_epoch_seconds(self):
        now = utc(2026, 11, 28, 12, 0, 30)
        policy_input = judge(now, "checkout", tier=1).as_input(now)
        assert policy_input == {
            "frozen": True,
            "freeze_name": "black-friday-cyber-monday-2026",
            "freeze_ends_at_epoch": int(utc(2026, 12, 1, 11, 0).timestamp()),
            "frozen_domains": ["checkout"],
            "inside_business_hours": False,
            "business_hours_reason": "tier 1 releases to production run Mon–Thu 09:00–16:00 Europe/Berlin; "
            "next window opens Mon 2026-11-30 09:00 Europe/Berlin",
            "next_business_open_epoch": int(utc(2026, 11, 30, 8, 0).timestamp()),
            "retry_at_epoch": int(utc(2026, 12, 1, 11, 0).timestamp()),
            "now_epoch": int(now.timestamp()),
        }
        assert all(type(v) is int for k, v in policy_input.items() if k.endswith("_epoch"))

    def test_policy_input_has_no_time_strings(self):
        now = utc(2026, 11, 28, 12, 0)
        text = json.dumps(judge(now, "checkout", "pricing", tier=1).as_input(now))
        assert not re.search(r"\d{4}-\d{2}-\d{2}T|\d{2}:\d{2}:\d{2}|Z\"", text)

    def test_now_is_rounded_down_to_whole_seconds(self):
        now = utc(2026, 12, 1, 10, 59, 59).replace(microsecond=999_999)
        policy_input = judge(now).as_input(now)
        assert policy_input["now_epoch"] == policy_input["freeze_ends_at_epoch"] - 1

    def test_policy_input_is_all_nulls_and_falses_when_nothing_waits(self):
        now = utc(2026, 11, 17, 9, 0)
        policy_input = judge(now, "content", tier=1).as_input(now)
        assert policy_input["frozen"] is False and policy_input["inside_business_hours"] is True
        assert policy_input["freeze_ends_at_epoch"] is None and policy_input["retry_at_epoch"] is None
        assert policy_input["next_business_open_epoch"] is None and policy_input["frozen_domains"] == []


def problem(text: str) -> str:
    with pytest.raises(CalendarError) as caught:
        Calendar.from_yaml(text, source="calendar.yaml")
    return str(caught.value)


FREEZE = "{name: bf, timezone: America/New_York, start: 2026-11-26T00:00, end: 2026-12-01T06:00, blocks: [checkout]}"


class TestCalendarFiles:
    def test_unknown_key_is_named_with_where_it_is(self):
        text = problem("version: 1\nfreezes:\n  - " + FREEZE.replace("timezone", "timezon"))
        assert "freezes[0].timezon: unknown key" in text
        assert "freezes[0].timezone: Field required" in text

    def test_unknown_top_level_key_is_named(self):
        assert "freeze: unknown key" in problem("version: 1\nfreeze: []\n")

    def test_unknown_time_zone_is_named(self):
        text = problem("version: 1\nfreezes:\n  - " + FREEZE.replace("America/New_York", "Mars/Olympus"))
        assert "freezes[0].timezone: unknown IANA time zone 'Mars/Olympus'" in text

    def test_unquoted_business_hours_time_asks_for_quotes(self):
        text = problem(
            "version: 1\nbusiness_hours:\n  - {tiers: [1], timezone: Europe/Berlin, days: [mon], "
            'start: "09:00", end: 16:00}\n'
        )
        assert "business_hours[0].end: quote the time" in text

    def test_bad_cron_expression_is_named(self):
        text = problem(
            "version: 1\nrecurring:\n  - {name: close, timezone: Europe/Berlin, cron: '0 18 32 * *', "
            "duration_hours: 30, blocks: [erp-sync]}\n"
        )
        assert "recurring[0].cron: '0 18 32 * *' is not a five-field cron expression" in text

    def test_cron_expression_that_never_fires_is_refused(self):
        text = problem(
            "version: 1\nrecurring:\n  - {name: close, timezone: Europe/Berlin, cron: '0 18 30 2 *', "
            "duration_hours: 30, blocks: [erp-sync]}\n"
        )
        assert "recurring[0].cron: '0 18 30 2 *' never fires" in text

    def test_freeze_ending_before_it_starts_is_refused(self):
        text = problem("version: 1\nfreezes:\n  - " + FREEZE.replace("2026-12-01T06:00", "2026-11-25T00:00"))
        assert "freezes[0]: end 2026-11-25T00:00 is not after start 2026-11-26T00:00" in text

    def test_freeze_starting_in_the_hour_the_clocks_skip_is_refused(self):
        text = problem(
            "version: 1\nfreezes:\n  - {name: spring, timezone: Europe/Berlin, start: 2026-03-29T02:30, "
            "end: 2026-03-30T00:00, blocks: [checkout]}\n"
        )
        assert "start 2026-03-29T02:30 is skipped or repeated in Europe/Berlin" in text

    def test_freeze_time_with_an_offset_is_refused(self):
        text = problem("version: 1\nfreezes:\n  - " + FREEZE.replace("2026-11-26T00:00", "2026-11-26T00:00:00Z"))
        assert "freezes[0].start: write the wall-clock time without an offset" in text

    def test_two_freezes_with_one_name_are_refused(self):
        assert "must be unique" in problem(f"version: 1\nfreezes:\n  - {FREEZE}\n  - {FREEZE}\n")

    def test_broken_yaml_is_reported_as_yaml(self):
        assert "calendar.yaml is not valid YAML" in problem("version: 1\nfreezes: [\n")

    def test_empty_file_is_refused(self):
        assert "calendar.yaml is invalid: top level" in problem("")

    def test_missing_file_is_a_calendar_error(self, tmp_path):
        with pytest.raises(CalendarError, match="cannot read the release calendar"):
            Calendar.load(tmp_path / "nope.yaml")

    def test_digest_is_the_sha256_of_the_file_content(self, tmp_path):
        path = tmp_path / "calendar.yaml"
        path.write_text(f"version: 7\nfreezes:\n  - {FREEZE}\n")
        calendar = Calendar.load(path)
        assert calendar.version == 7
        assert calendar.digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()

    def test_empty_calendar_never_blocks(self):
        timing = Calendar.empty().timing(utc(2026, 11, 28, 3, 0), tier=1, domains=["checkout"])
        assert not timing.frozen and timing.inside_business_hours and timing.retry_at is None


class TestShippedCalendars:
    def test_production_example_freezes_checkout_over_black_friday_christmas_and_next_years_black_friday(self):
        calendar = Calendar.load(REPO / "policies" / "calendar.yaml")
        assert judge(utc(2026, 11, 27, 15, 0), calendar=calendar).freeze_name == "black-friday-cyber-monday-2026"
        assert judge(utc(2027, 11, 26, 15, 0), calendar=calendar).freeze_name == "black-friday-cyber-monday-2027"
        assert judge(utc(2026, 12, 24, 15, 0), calendar=calendar).freeze_name == "christmas-boxing-day-2026"
        assert judge(utc(2026, 1, 31, 20, 0), "erp-sync", calendar=calendar).freeze_name == "month-end-close"
        assert not judge(
            datetime(2026, 11, 20, 10, 0, tzinfo=BERLIN), "content", tier=1, calendar=calendar
        ).inside_business_hours

    def test_local_demo_calendar_lets_everything_through_on_black_friday_night(self):
        calendar = Calendar.load(REPO / "deploy" / "local" / "calendar.yaml")
        timing = judge(utc(2026, 11, 28, 3, 0), "checkout", "erp-sync", tier=1, calendar=calendar)
        assert not timing.frozen and timing.inside_business_hours and timing.retry_at is None
