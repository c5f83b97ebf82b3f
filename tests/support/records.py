"""A release's change record as its users take it: fetched from the API with a person's login once the API wrote it,
checked with `releasegate record verify` and the records public key alone (and refused once altered), taken away
with `releasegate record ID --html`, and its page opened in a real browser, which must show what the release did and
run nothing."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Page, expect

from tests.support.browser import CSP, api_url
from tests.support.oidc import person_token, secrets_dir
from tests.support.services import REPO, wait_until

PUBLIC_KEY = "keys/records.pub.json"


def releasegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["releasegate", *args], cwd=REPO, text=True, capture_output=True, timeout=60)


async def fetched(rid: str, token: str, timeout: float = 60) -> dict[str, Any]:
    """The release's change record from the API, once written (the API writes it when it sees the release end)."""
    found: dict[str, Any] = {}

    async def written() -> bool:
        async with httpx.AsyncClient(timeout=5) as http:
            r = await http.get(f"{api_url()}/v1/releases/{rid}/record", headers={"Authorization": f"Bearer {token}"})
        if r.status_code == 200:
            found.update(r.json())
        return r.status_code == 200

    await wait_until(written, timeout, f"the change record of {rid}", every=0.5)
    return found


def verified_and_refused_when_altered(envelope: dict[str, Any], outcome: str, work: Path) -> dict[str, Any]:
    """`releasegate record verify` accepts the record and refuses it with its outcome rewritten; the record."""
    key = str(secrets_dir() / PUBLIC_KEY)
    good = work / "record.json"
    good.write_text(json.dumps(envelope))
    ok = releasegate("record", "verify", str(good), "--public-key", key)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    record = json.loads(base64.b64decode(envelope["payload"]))
    assert record["release"]["outcome"] == outcome
    record["release"]["outcome"] = "promoted" if outcome != "promoted" else "rolled_back"
    forged = work / "forged.json"
    forged.write_text(json.dumps({**envelope, "payload": base64.b64encode(json.dumps(record).encode()).decode()}))
    refused = releasegate("record", "verify", str(forged), "--public-key", key)
    assert refused.returncode == 1 and "altered" in refused.stdout, refused.stdout + refused.stderr
    return json.loads(base64.b64decode(envelope["payload"]))


async def change_record(browser: Browser, rid: str, outcome: str, work: Path) -> Any:
    """Checks the release's record end to end (API, CLI verify and take-away, the page in chromium with no script
    error or CSP refusal); the page, open in its own context, for the caller's checks; the caller closes
    `page.context`."""
    token = await person_token("vic")
    envelope = await fetched(rid, token)
    record = verified_and_refused_when_altered(envelope, outcome, work)
    assert record["release"]["release_id"] == rid and record["provenance"]["verified"], record["provenance"]

    html = work / "record.html"
    taken = releasegate("record", rid, "--out", str(work / "taken.json"), "--html", str(html))
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert json.loads((work / "taken.json").read_text()) == envelope  # the CLI's copy is the API's record

    context = await browser.new_context(extra_http_headers={"Authorization": f"Bearer {token}"})
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and CSP.search(m.text) else None)
    await page.goto(f"{api_url()}/v1/releases/{rid}/record.html")
    await expect(page.locator("#outcome")).to_have_text(outcome)
    await expect(page.locator("#signature")).to_contain_text("Signature verified")
    # the page's one style block applies under its own policy (a refused style would leave the header cells white)
    assert await page.evaluate("getComputedStyle(document.querySelector('th')).backgroundColor") == "rgb(246, 248, 250)"
    assert problems == [], problems
    return page


async def downloaded_from_the_release_page(page: Page, rid: str, work: Path) -> None:
    """The release page of an ended release offers its record; the JSON a person downloads there verifies."""
    await expect(page.locator("#record")).to_be_visible()
    async with page.expect_download() as download:
        await page.click("#record-json")
    saved = work / "downloaded.json"
    await (await download.value).save_as(saved)
    ok = releasegate("record", "verify", str(saved), "--public-key", str(secrets_dir() / PUBLIC_KEY))
    assert ok.returncode == 0 and rid in ok.stdout, ok.stdout + ok.stderr
