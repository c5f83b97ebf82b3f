"""The GitLab CI template (integrations/gitlab/releasegate.gitlab-ci.yml): its shape, validity against GitLab's
official CI schema (vendored by the check-jsonschema package), and its job script run as a runner runs it, with the
shared script downloaded from the local server and checked against the template's pinned digest."""

from __future__ import annotations

import copy
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integrations.conftest import (
    CANDIDATE,
    INTEGRATIONS,
    REPO,
    SCRIPT,
    FakeApi,
    fresh_token,
    job_env,
    release_status,
)

TEMPLATE = INTEGRATIONS / "gitlab" / "releasegate.gitlab-ci.yml"
EXAMPLE = INTEGRATIONS / "gitlab" / "example.gitlab-ci.yml"
JOB = ".releasegate-release"


def template_job() -> dict[str, Any]:
    return yaml.safe_load(TEMPLATE.read_text())[JOB]


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """GitLab's `extends`: a deep merge of mappings, the extending job winning."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def schema_check(pipeline: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


class TestTemplateShape:
    def test_the_job_asks_for_an_id_token_for_releasegate(self):
        assert template_job()["id_tokens"] == {"RELEASEGATE_ID_TOKEN": {"aud": "releasegate"}}

    def test_the_job_takes_the_api_and_the_candidate_as_variables(self):
        variables = template_job()["variables"]
        assert {"RELEASEGATE_API_URL", "RELEASEGATE_CANDIDATE", "RELEASEGATE_WATCH"} <= set(variables)

    def test_the_job_runs_the_shared_script(self):
        job = template_job()
        assert job["script"][-1] == 'python3 "$RELEASEGATE_SCRIPT"'
        assert job["variables"]["RELEASEGATE_SCRIPT"].endswith("/releasegate_submit.py")

    def test_the_pinned_digest_is_the_shared_scripts(self):
        pinned = template_job()["variables"]["RELEASEGATE_SCRIPT_SHA256"]
        actual = hashlib.sha256(SCRIPT.read_bytes()).hexdigest()
        assert pinned == actual, f"set RELEASEGATE_SCRIPT_SHA256 in {TEMPLATE.relative_to(REPO)} to {actual}"

    def test_the_example_extends_the_job_from_the_included_template(self):
        example = yaml.safe_load(EXAMPLE.read_text())
        assert {"local": str(TEMPLATE.relative_to(REPO))} in example["include"]
        assert example["release"]["extends"] == JOB


class TestOfficialSchema:
    def test_a_job_extending_the_template_is_valid(self, tmp_path):
        # GitLab's schema does not look into hidden jobs: check the job as the extending one becomes
        done = schema_check({"release": template_job()}, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr

    def test_the_example_pipeline_is_valid_with_the_template_merged_in(self, tmp_path):
        example = yaml.safe_load(EXAMPLE.read_text())
        pipeline = {k: v for k, v in example.items() if k != "include"}
        pipeline["release"] = merged(template_job(), {k: v for k, v in example["release"].items() if k != "extends"})
        done = schema_check(pipeline, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr

    def test_the_schema_check_refuses_a_misspelt_id_token(self, tmp_path):
        job = template_job()
        job["id_tokens"] = {"RELEASEGATE_ID_TOKEN": {"audience": "releasegate"}}
        done = schema_check({"release": job}, tmp_path)
        assert done.returncode == 1, done.stdout


def run_job(api: FakeApi, project: Path, **variables: str) -> subprocess.CompletedProcess:
    """The job's script as a GitLab runner runs it: the lines in one POSIX shell with errexit, the job's variables
    and its ID token in the environment, the project checkout as working directory."""
    job = template_job()
    env = job_env(GITLAB_CI="true", CI_PROJECT_DIR=str(project), RELEASEGATE_ID_TOKEN=variables.pop("token"))
    env |= {k: str(v) for k, v in job["variables"].items()}
    env |= {"RELEASEGATE_API_URL": api.base, "RELEASEGATE_POLL_SECONDS": "0.05"} | variables
    return subprocess.run(
        ["sh", "-e", "-c", "\n".join(job["script"])],
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def project(tmp_path) -> Path:
    """A service's checkout: the candidate its build wrote, no releasegate files."""
    checkout = tmp_path / "project"
    checkout.mkdir()
    shutil.copy(CANDIDATE, checkout / "candidate.json")
    return checkout


class TestTheJob:
    def test_downloads_the_pinned_script_and_passes_when_promoted(self, api, project):
        token = fresh_token()
        api.tokens.add(token)
        api.script_body = SCRIPT.read_bytes()
        rid = api.release_id
        api.statuses = [
            (200, release_status(rid, [("verifying", "verify-staging", "deployed")])),
            (200, release_status(rid, [("promoted", "verify-canary-100", "all steps passed")], terminal=True)),
        ]
        done = run_job(api, project, token=token, RELEASEGATE_SCRIPT_URL=f"{api.base}/script")
        assert done.returncode == 0, done.stdout + done.stderr
        assert (project / ".releasegate" / "releasegate_submit.py").read_bytes() == SCRIPT.read_bytes()
        assert api.requests("POST", "/v1/candidates")[0].authorization == f"Bearer {token}"
        report = (project / "releasegate.env").read_text().splitlines()
        assert f"RELEASEGATE_RELEASE_ID={rid}" in report and "RELEASEGATE_STATE=promoted" in report
        assert token not in done.stdout + done.stderr

    def test_fails_on_rollback_with_the_reason(self, api, project):
        token = fresh_token()
        api.tokens.add(token)
        api.script_body = SCRIPT.read_bytes()
        api.statuses = [
            (200, release_status(api.release_id, [("rolled_back", "verify-canary-10", "errors rose")], terminal=True))
        ]
        done = run_job(api, project, token=token, RELEASEGATE_SCRIPT_URL=f"{api.base}/script")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "reason: errors rose" in done.stdout

    def test_a_script_other_than_the_pinned_one_is_not_run(self, api, project):
        token = fresh_token()
        api.tokens.add(token)
        api.script_body = SCRIPT.read_bytes() + b"\nprint('also send the token elsewhere')\n"
        done = run_job(api, project, token=token, RELEASEGATE_SCRIPT_URL=f"{api.base}/script")
        assert done.returncode != 0
        assert "this template expects" in done.stderr
        assert not (project / ".releasegate").exists()
        assert api.requests("POST", "/v1/candidates") == []

    def test_without_a_script_or_its_url_the_job_says_what_is_missing(self, api, project):
        done = run_job(api, project, token=fresh_token())
        assert done.returncode == 2
        assert "RELEASEGATE_SCRIPT_URL is not set" in done.stderr
        assert api.seen == []
