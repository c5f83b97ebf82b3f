"""`make demo`: release v2 of the sample shop (expect promoted), then v3 with its payment regression (expect
rolled back by itself), driven only through the `releasegate` CLI. Checks what really happened — versions
answering through HAProxy, the alert on release.alerts — prints both timelines, exits 0 only if all held."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from contracts import topics
from releasegate_cli import client
from releasegate_cli.probes import TopicTail, versions_served
from releasegate_runtime.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = "http://127.0.0.1:18080"
CANDIDATES = ROOT / "examples" / "candidates"
KEYS = ROOT / "examples" / "keys"  # demo-only approver keys


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["releasegate", *args], cwd=ROOT, text=True, stdout=subprocess.PIPE)


def banner(text: str) -> None:
    print(f"\n{'=' * 100}\n{text}\n{'=' * 100}", flush=True)


def release(version: str, approvers: tuple[str, ...] = ()) -> tuple[str, int]:
    rid = cli("submit", str(CANDIDATES / f"shop-{version}.json")).stdout.strip()
    banner(f"releasing shop {version}: {rid}")
    for who in approvers:
        print(f"{who} (shop-approvers) approves {rid} with a signed approval", flush=True)
        cli("approve", rid, "--reason", "payment change reviewed", "--key", str(KEYS / f"{who}.key"))
    watch = subprocess.run(["releasegate", "watch", rid, "--timeout", "420"], cwd=ROOT)
    return rid, watch.returncode


DASHBOARD = os.environ.get("RG_API_URL", "http://127.0.0.1:18800").rstrip("/")
NOTIFY_SINK_LOG = ROOT / ".run" / "logs" / "notify-sink.jsonl"  # the local Slack receiver (deploy/local/notify_sink.py)


async def slack_message(rid: str, state: str, timeout: float = 30) -> bool:
    """Whether the local Slack receiver got the notifier's message about `rid` reaching `state` within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            lines = NOTIFY_SINK_LOG.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            body = json.dumps(record.get("body"))
            if str(record.get("path", "")).startswith("/slack/") and rid in body and state in body:
                return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)


async def main() -> int:
    settings = ServiceSettings(principal="ops")  # the demo acts as an operator on the bus
    leftovers = await client.abort_in_flight(settings, "carol", "clean start for the demo", key=KEYS / "carol.key")
    deadline = time.monotonic() + 240
    while not await client.all_ended(settings, leftovers):
        if time.monotonic() > deadline:
            print(f"left-over releases {leftovers} did not end")
            return 1
        await asyncio.sleep(0.5)
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.deployer.bootstrap", "--force", str(CANDIDATES / "shop-v1.json")],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # Recovery proven before risky releases: a fresh backup and a restore drill (tier 1 needs both).
    for job in ("services.dr_checker.backup", "services.dr_checker.drill"):
        await asyncio.to_thread(subprocess.run, [sys.executable, "-m", job, "shop"], cwd=ROOT, check=True)
    checks: list[tuple[str, bool]] = []
    banner(
        f"watch the releases live on the dashboard: {DASHBOARD}\n"
        f"sign in as alice, bob, carol, dave, dev or vic; passwords in {ROOT / '.run' / 'secrets' / 'oidc'}/<name>.password"
    )
    print(f"before: production answers with {dict(await versions_served(PRODUCTION))}")

    v2, rc = await asyncio.to_thread(release, "v2")
    served = await versions_served(PRODUCTION)
    checks += [
        ("v2 release ended promoted (watch exit 0)", rc == 0),
        (f"all production traffic on v2 through HAProxy {dict(served)}", set(served) == {"v2"}),
    ]

    alerts = await TopicTail(settings, topics.ALERTS).start()
    try:
        v3, rc = await asyncio.to_thread(release, "v3", ("alice", "bob"))
        served = await versions_served(PRODUCTION)
        alert = await alerts.wait_for(lambda e: e.subject == v3, timeout=30)
    finally:
        await alerts.stop()
    checks += [
        (
            "v3 release ended rolled_back (watch exit 1)",
            rc == 1 and '"rolled_back"' in cli("status", v3, "--json").stdout,
        ),
        (f"all production traffic back on stable v2 through HAProxy {dict(served)}", set(served) == {"v2"}),
        (f"alert on {topics.ALERTS}: {alert.data.title if alert else 'none'}", alert is not None),
    ]
    checks.append(
        (
            f"the local Slack receiver got the notifier's rolled_back message for {v3} ({NOTIFY_SINK_LOG.name})",
            await slack_message(v3, "rolled_back"),
        )
    )

    for rid in (v2, v3):
        banner(f"timeline of {rid}")
        await asyncio.to_thread(subprocess.run, ["releasegate", "timeline", rid], cwd=ROOT)
        banner(f"releasegate explain {rid}")
        await asyncio.to_thread(subprocess.run, ["releasegate", "explain", rid], cwd=ROOT)
    banner(f"the two releases on the dashboard: {DASHBOARD}/releases/{v2} and {DASHBOARD}/releases/{v3}")
    banner("demo outcome")
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
