"""The dashboard in a real browser, against the whole local stack: people sign in on the OIDC provider's login page,
follow releases live without reloading, approve from the page (the author cannot), and see a rollback happen.
With RG_SCREENSHOTS=1 the promoted and the rolled-back release pages are saved to docs/screenshots/."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import status, submit
from tests.support.browser import Dashboard, screenshots_wanted
from tests.support.records import change_record, downloaded_from_the_release_page

pytestmark = [pytest.mark.slow, pytest.mark.integration]
TERMINAL = {"promoted", "rolled_back", "rollback_failed", "aborted", "rejected"}
# an approver's reason that is markup: the page must show it as text and run nothing
MARKUP_REASON = 'reviewed <img src=x id="injected" onerror="window.__rgPwned = 1"> the payment change'


async def approvals_given(pool, rid: str) -> list[tuple[str, str]]:
    """(actor, kind) of each approval the coordinator holds for the release."""
    async with pool.acquire() as conn:
        body = await conn.fetchval("SELECT body FROM sagas WHERE release_id = $1", rid)
    return sorted((a["actor"], a["kind"]) for a in (body or {}).get("approvals") or [])


async def reaches(page: Dashboard, rid: str, state: str, timeout: float) -> None:
    """The page's badge shows `state` within `timeout` s; if not, the failure says where the release really is
    (the coordinator's state and last timeline entries), which tells a stale page from a stuck release."""
    try:
        await page.wait_for_state(state, timeout)
    except AssertionError as exc:
        known = status(rid)
        last = [f"{t['state']}: {t['reason']}" for t in known.get("timeline", [])[-6:]]
        raise AssertionError(f"page never showed {state}; the release is {known.get('state')}; last: {last}") from exc


async def assert_shown_as_text(dash: Dashboard) -> None:
    assert await dash.page.locator("#injected").count() == 0
    assert await dash.page.evaluate("window.__rgPwned") is None


class TestFollowingReleasesLive:
    async def test_a_release_is_followed_from_the_list_to_promoted_without_reloading(
        self, dashboard, browser, stable_v1, tmp_path
    ):
        vic = await Dashboard.sign_in(browser, "vic")  # a viewer: sees everything, may do nothing
        try:
            await vic.page.evaluate("window.__rgMarker = 'list'")
            rid = submit("v2")
            row = vic.page.locator(f'#releases-table tr[data-release="{rid}"]')
            await expect(row).to_be_visible(timeout=60_000)
            assert await vic.page.evaluate("window.__rgMarker") == "list", "the list page was reloaded"

            await row.locator("a.release-link").click()
            await vic.page.wait_for_url(f"**/releases/{rid}")
            await vic.open_release(rid)
            await reaches(vic, rid, "promoted", timeout=420)

            assert not await vic.reloaded()
            seen = await vic.states_seen()
            assert seen[0] not in TERMINAL and seen[-1] == "promoted", seen
            assert await vic.actions() == []
            await expect(vic.page.locator("#traffic-table")).to_contain_text("v2 100%")
            await expect(vic.page.locator("#timeline-table")).to_contain_text("gate-production")
            assert await vic.page.locator("#kpis tbody tr").count() > 0
            # the charts were drawn by the library, not replaced by the tables-only fallback
            assert await vic.page.evaluate("typeof window.Chart") == "function"
            assert await vic.page.locator("#traffic-chart-box").is_visible()
            assert await vic.page.locator("#charts-missing").is_hidden()
            assert vic.problems == []
            if screenshots_wanted():
                await vic.screenshot("release-promoted.png")
            # the release leaves a signed change record (checked with the public key alone), readable in the browser
            record = await change_record(browser, rid, "promoted", tmp_path)
            try:
                await downloaded_from_the_release_page(vic.page, rid, tmp_path)
                assert await record.locator("#verdicts table.kpis tbody tr").count() > 0
                await expect(record.locator("#verdicts")).to_contain_text("pass")
                await expect(record.locator("#traffic-table")).to_contain_text("v2 100%")
                await expect(record.locator("#compensations")).to_contain_text("nothing had to be undone")
                await expect(record.locator("#incident")).to_contain_text("no incident")
            finally:
                await record.context.close()
        finally:
            await vic.close()

    async def test_a_rollback_by_itself_shows_up_without_reloading(self, dashboard, browser, stable_v1, tmp_path):
        vic = await Dashboard.sign_in(browser, "vic")
        try:
            rid = submit("v3", approvers=("alice", "bob"))
            await vic.open_release(rid)
            await reaches(vic, rid, "rolled_back", timeout=420)

            assert not await vic.reloaded()
            seen = await vic.states_seen()
            assert seen[0] not in TERMINAL and seen[-1] == "rolled_back", seen
            await expect(vic.page.locator("#verdicts-table")).to_contain_text("fail")
            await expect(vic.page.locator("#timeline-table")).to_contain_text("compensation compensate:production")
            assert status(rid)["state"] == "rolled_back"
            assert vic.problems == []
            if screenshots_wanted():
                await vic.screenshot("release-rolled-back.png")
            # its change record shows the failed verdict's KPI table and the compensations that undid it
            record = await change_record(browser, rid, "rolled_back", tmp_path)
            try:
                await expect(record.locator("#verdicts .badge.failed")).not_to_have_count(0)
                assert await record.locator("#verdicts table.kpis tbody tr").count() > 0
                await expect(record.locator("#compensations")).to_contain_text("compensate:production")
                await expect(record.locator("#compensations")).to_contain_text("done")
                # and the incident the coordinator opened when the release ended
                await expect(record.locator("#incident")).to_contain_text("rolled_back")
                await expect(record.locator("#incident")).not_to_contain_text("no incident")
            finally:
                await record.context.close()
        finally:
            await vic.close()


class TestApprovalsFromThePage:
    async def test_an_approver_approves_from_the_page_and_the_author_is_refused(
        self, dashboard, browser, pool, stable_v1, tmp_path
    ):
        rid = submit("v3")  # a payment change: high risk, two shop-approvers must approve at the production gate
        alice = await Dashboard.sign_in(browser, "alice")
        dev = await Dashboard.sign_in(browser, "dev")  # the candidate's author
        try:
            await alice.open_release(rid)
            await reaches(alice, rid, "awaiting_approval", timeout=300)
            await expect(alice.page.locator("#approvals-table")).to_contain_text("shop-approvers")
            assert "approve" in await alice.actions()

            await dev.open_release(rid)
            assert "approve" not in await dev.actions()
            before = await approvals_given(pool, rid)
            # the page does not offer it; a forged button sends it anyway, and the API refuses it
            await dev.forge_button("approve")
            outcome, said = await dev.act("approve", "my own change is fine")
            assert outcome == "refused" and "the author of a change cannot approve it" in said, said

            outcome, said = await alice.act("approve", MARKUP_REASON)
            assert outcome == "accepted", said
            # alice's approval reaches the timeline of both open pages, live, shown as text
            for page in (alice, dev):
                await expect(page.page.locator("#timeline-table")).to_contain_text(
                    "approval by alice recorded: " + MARKUP_REASON, timeout=60_000
                )
                await assert_shown_as_text(page)
                assert not await page.reloaded()
            await expect(alice.page.locator("#approvals-table")).to_contain_text("alice")

            # commands of one release are handled in order: dev's would have come before alice's, and did not
            assert await approvals_given(pool, rid) == sorted([*before, ("alice", "approval")])
            assert not [t for t in status(rid)["timeline"] if t["actor"] == "dev"]

            outcome, said = await alice.act("abort", "end of the dashboard approval test")
            assert outcome == "accepted", said
            await reaches(alice, rid, "aborted", timeout=240)
            assert not await alice.reloaded()
            assert alice.problems == [] and dev.problems == []
            # the aborted release's change record names alice's approval and shows its markup reason as text
            record = await change_record(browser, rid, "aborted", tmp_path)
            try:
                await expect(record.locator("#approvals-table")).to_contain_text(MARKUP_REASON)
                assert await record.locator("#injected").count() == 0
                assert await record.evaluate("window.__rgPwned") is None
            finally:
                await record.context.close()
        finally:
            await alice.close()
            await dev.close()
