"""End to end on the local stack (every service, the API on 18800, the OIDC provider on 19400): the shared submit
script of the CI integrations (integrations/scripts) run as a CI job runs it, with tokens the local provider issues
to its CI clients. A pipeline of the trusted repository releases shop v2 and its job passes once the release is
promoted; a fork's pipeline is refused and submits nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
import pytest

from tests.conftest import REPO
from tests.support.oidc import ci_token, person_token

pytestmark = [pytest.mark.slow, pytest.mark.integration]
SCRIPT = REPO / "integrations" / "scripts" / "releasegate_submit.py"
CANDIDATE = REPO / "examples" / "candidates" / "shop-v2.json"

API = os.environ.get("RG_API_URL", "http://127.0.0.1:18800").rstrip("/")
VIEWER = "vic"  # releasegate-viewers: reads releases, may do nothing


def ci_job_env(**extra: str) -> dict[str, str]:
    """This environment (the token command needs the stack's settings) without any real CI platform's variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "ACTIONS_", "RELEASEGATE_")) and k != "CI"
    }
    return env | {"RELEASEGATE_API_URL": API, "RELEASEGATE_CANDIDATE": str(CANDIDATE)} | extra


async def run_script(env: dict[str, str], timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def release_ids(token: str) -> set[str]:
    async with httpx.AsyncClient(timeout=15.0) as http:
        response = await http.get(f"{API}/v1/releases", params={"limit": 500}, headers=auth(token))
    response.raise_for_status()
    return {r["release_id"] for r in response.json()}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestCiJobsOnTheStack:
    async def test_a_forks_pipeline_is_refused_and_nothing_is_submitted(self, api, stable_v1, tmp_path):
        viewer = await person_token(VIEWER)
        before = await release_ids(viewer)
        fork = await ci_token("ci-github-fork")
        code, out = await run_script(ci_job_env(RELEASEGATE_TOKEN=fork), timeout=120)
        assert code == 3, out
        assert "refused (HTTP 403)" in out and "may not submit shop candidates" in out, out
        assert fork not in out
        assert await release_ids(viewer) == before

    async def test_a_trusted_pipeline_releases_and_its_job_passes_when_promoted(self, api, stable_v1, tmp_path):
        # CI tokens live at most 300 s and a release takes longer: the script asks this command again for a new
        # one (tests.support.oidc.ci_token, as the CI platform would), and each token it gets is noted to check the log
        issued = tmp_path / "issued"
        command = (
            f'{sys.executable} -c "import asyncio; from tests.support.oidc import ci_token; '
            f"t = asyncio.run(ci_token('ci-github-shop')); open({str(issued)!r}, 'a').write(t + chr(10)); print(t)\""
        )
        env = ci_job_env(
            RELEASEGATE_TOKEN_COMMAND=command, RELEASEGATE_TIMEOUT_MINUTES="10", RELEASEGATE_POLL_SECONDS="5"
        )
        code, out = await run_script(env, timeout=11 * 60)
        assert code == 0, out[-4000:]
        assert "final state: promoted" in out
        rid = next(line.split()[2].rstrip(":") for line in out.splitlines() if line.startswith("releasegate: release "))
        async with httpx.AsyncClient(timeout=15.0) as http:
            response = await http.get(f"{API}/v1/releases/{rid}", headers=auth(await person_token(VIEWER)))
        response.raise_for_status()
        release = response.json()["release"]
        assert (release["service"], release["version"], release["state"]) == ("shop", "v2", "promoted")
        assert release["terminal"] is True
        tokens = (await asyncio.to_thread(issued.read_text)).split()
        assert tokens and not any(t in out for t in tokens)
