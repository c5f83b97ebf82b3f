"""The dashboard in a real browser for the tests: Debian's chromium (never Playwright's own browser downloads) driven
by Playwright, a person signed in through the local OIDC provider's own login form with their per-machine password,
and what a person sees on a release page: the state badge, the offered actions, what an action answered."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from playwright.async_api import Error as PlaywrightError

from tests.support.oidc import issuer, password
from tests.support.services import REPO

CHROMIUM = Path(os.environ.get("RG_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO / "docs" / "screenshots"
CSP = re.compile(r"Content Security Policy|Refused to")  # how chromium reports what the page's CSP blocked


def api_url() -> str:
    return os.environ.get("RG_API_URL", "http://127.0.0.1:18800").rstrip("/")


def screenshots_wanted() -> bool:
    """RG_SCREENSHOTS=1: the tests that end in a telling state save the page to docs/screenshots/."""
    return os.environ.get("RG_SCREENSHOTS") == "1"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        try:
            b = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        except PlaywrightError as exc:
            pytest.fail(f"cannot start {CHROMIUM} ({exc}): `deploy/stack.sh install` installs it", pytrace=False)
        try:
            yield b
        finally:
            await b.close()


class Dashboard:
    """One person's browser tab on the dashboard (its own context: cookies and sessionStorage of its own)."""

    def __init__(self, user: str, context: BrowserContext, page: Page) -> None:
        self.user, self.context, self.page = user, context, page
        self.problems: list[str] = []  # script errors and CSP violations the page reported
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" and CSP.search(m.text) else None)

    @classmethod
    async def sign_in(cls, browser: Browser, user: str, path: str = "/") -> Dashboard:
        """Open `path`, which sends the browser to the provider; sign in on its login form as `user`; back on
        `path`, signed in."""
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        dash = cls(user, context, await context.new_page())
        page = dash.page
        await page.goto(f"{api_url()}{path}")
        await page.wait_for_url(f"{issuer()}/interaction/**")
        await page.fill("input[name=username]", user)
        await page.fill("input[name=password]", password(user))
        await page.click("button[type=submit]")
        await page.wait_for_url(re.compile(re.escape(api_url()) + re.escape(path) + r"(\?.*)?$"))
        await expect(page.locator("#whoami")).not_to_be_empty()
        return dash

    async def open_release(self, release_id: str) -> None:
        """The release page, rendered; marks the document so that `reloaded()` can tell a reload or navigation
        since, and records each state the badge shows from now on."""
        await self.page.goto(f"{api_url()}/releases/{release_id}")
        await expect(self.page.locator("#state")).to_have_attribute("data-state", re.compile(r"\w"))
        await self.page.evaluate(
            """marker => {
                window.__rgMarker = marker;
                window.__rgStates = [document.getElementById('state').dataset.state];
                new MutationObserver(() => {
                    const s = document.getElementById('state')?.dataset.state;
                    if (s && s !== window.__rgStates.at(-1)) window.__rgStates.push(s);
                }).observe(document.getElementById('title'), {childList: true, subtree: true, attributes: true});
            }""",
            self._marker,
        )

    _marker = secrets.token_hex(8)

    async def reloaded(self) -> bool:
        """Whether the document was replaced since `open_release` (a reload would be needed to see changes)."""
        return await self.page.evaluate("window.__rgMarker") != self._marker

    async def states_seen(self) -> list[str]:
        """The badge's states since `open_release`, in order, each change once."""
        return await self.page.evaluate("window.__rgStates")

    async def state(self) -> str | None:
        return await self.page.get_attribute("#state", "data-state")

    async def wait_for_state(self, state: str, timeout: float) -> None:
        """The badge shows `state` within `timeout` seconds (Playwright re-checks it as the page changes)."""
        await expect(self.page.locator("#state")).to_have_attribute("data-state", state, timeout=timeout * 1000)

    async def actions(self) -> list[str]:
        """The actions the page offers this person (its buttons)."""
        return await self.page.locator("#action-buttons button").evaluate_all("bs => bs.map(b => b.dataset.action)")

    async def forge_button(self, action: str) -> None:
        """Put `action`'s button on the page although the page did not offer it, as anyone can edit a page they
        have open: the API, not the page, decides who may act."""
        await self.page.evaluate(
            """action => {
                const b = document.createElement('button');
                b.type = 'button'; b.id = `action-${action}`; b.dataset.action = action; b.textContent = action;
                document.getElementById('action-buttons').append(b);
                document.getElementById('actions').hidden = false;
            }""",
            action,
        )

    async def act(self, action: str, reason: str) -> tuple[str, str]:
        """Give `reason` and click `action`'s button; the page's answer as (outcome, text), outcome `accepted` or
        `refused`."""
        await self.page.fill("#action-reason", reason)
        await self.page.click(f"#action-{action}")
        answered = self.page.locator("#notice:visible, #action-error:visible")
        await expect(answered).to_have_count(1)
        text = await answered.inner_text()
        return ("accepted" if await answered.get_attribute("id") == "notice" else "refused"), text

    async def screenshot(self, name: str) -> Path:
        """The whole page as a PNG: `name` under docs/screenshots/ (or an absolute path)."""
        path = SCREENSHOTS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def close(self) -> None:
        await self.context.close()
