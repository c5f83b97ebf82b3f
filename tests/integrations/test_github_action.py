"""The composite action (integrations/github-actions/action.yml) as the runner runs it: its one step's `run` in
`bash -eo pipefail`, its `env` with the inputs substituted, against the local server playing GitHub's OIDC token
endpoint and the API."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.integrations.conftest import CANDIDATE, INTEGRATIONS, FakeApi, fresh_token, job_env, release_status

ACTION = INTEGRATIONS / "github-actions"
EXPRESSION = re.compile(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}")


def action() -> dict:
    return yaml.safe_load((ACTION / "action.yml").read_text())


def run_action(inputs: dict[str, str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    meta = action()
    values = {name: spec.get("default", "") for name, spec in meta["inputs"].items()} | inputs
    [step] = meta["runs"]["steps"]
    step_env = {k: EXPRESSION.sub(lambda m: values[m.group(1)], str(v)) for k, v in step["env"].items()}
    assert step["shell"] == "bash"
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        env=env | step_env | {"GITHUB_ACTION_PATH": str(ACTION)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def runner_env(api: FakeApi, tmp_path: Path) -> dict[str, str]:
    return job_env(
        GITHUB_ACTIONS="true",
        ACTIONS_ID_TOKEN_REQUEST_URL=f"{api.base}/github/token?api-version=2.0",
        ACTIONS_ID_TOKEN_REQUEST_TOKEN=api.github_request_token,
        GITHUB_OUTPUT=str(tmp_path / "output"),
        GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
    )


def test_every_input_reaches_the_script_through_the_environment():
    meta = action()
    [step] = meta["runs"]["steps"]
    used = {m.group(1) for v in step["env"].values() for m in EXPRESSION.finditer(str(v))}
    assert used == set(meta["inputs"])
    # an input spliced into the command line would be a script injection
    assert "${{" not in step["run"]


def test_the_action_submits_watches_and_sets_its_outputs(api, tmp_path):
    token = fresh_token()
    api.github_tokens = [token]
    api.tokens.add(token)
    rid = api.release_id
    api.statuses = [
        (200, release_status(rid, [("verifying", "verify-staging", "deployed to staging")])),
        (200, release_status(rid, [("promoted", "verify-canary-100", "all steps passed")], terminal=True)),
    ]
    inputs = {"api-url": api.base, "candidate": str(CANDIDATE), "poll-seconds": "0.05"}
    done = run_action(inputs, runner_env(api, tmp_path), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert api.requests("GET", "/github/token")[0].query["audience"] == ["releasegate"]
    written = dict(line.split("=", 1) for line in (tmp_path / "output").read_text().splitlines())
    # each output of the action is a value the step really writes
    for name, spec in action()["outputs"].items():
        assert spec["value"] == f"${{{{ steps.submit.outputs.{name} }}}}"
        assert name in written
    assert written["release-id"] == rid and written["state"] == "promoted"


def test_the_action_fails_the_job_on_rollback(api, tmp_path):
    token = fresh_token()
    api.github_tokens = [token]
    api.tokens.add(token)
    api.statuses = [
        (
            200,
            release_status(api.release_id, [("rolled_back", "verify-canary-10", "checkout rate fell")], terminal=True),
        )
    ]
    inputs = {"api-url": api.base, "candidate": str(CANDIDATE), "poll-seconds": "0.05"}
    done = run_action(inputs, runner_env(api, tmp_path), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "reason: checkout rate fell" in done.stdout


def test_the_action_names_the_missing_permission(api, tmp_path):
    env = runner_env(api, tmp_path)
    del env["ACTIONS_ID_TOKEN_REQUEST_URL"], env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
    done = run_action({"api-url": api.base, "candidate": str(CANDIDATE)}, env, tmp_path)
    assert done.returncode == 2
    assert "permissions: id-token: write" in done.stdout
    assert api.seen == []
