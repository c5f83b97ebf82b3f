"""Linters on the CI integrations: actionlint (built by `deploy/stack.sh install`, deploy/components/tools.sh) on the
example workflow in a scratch project, where its `uses: ./integrations/github-actions` makes actionlint read the
action's metadata too; shellcheck on the scripts the action and the GitLab job run; the SchemaStore schemas of
actions and workflows (vendored by check-jsonschema)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integrations.conftest import INTEGRATIONS, REPO

TOOLS = REPO / "deploy" / "components" / "tools.sh"
WORKFLOW = INTEGRATIONS / "github-actions" / "example-workflow.yml"
ACTION = INTEGRATIONS / "github-actions" / "action.yml"
TEMPLATE = INTEGRATIONS / "gitlab" / "releasegate.gitlab-ci.yml"


def actionlint() -> Path:
    version = re.search(r"^ACTIONLINT_VERSION=(\S+)", TOOLS.read_text(), re.M)
    assert version, f"no ACTIONLINT_VERSION in {TOOLS}"
    cache = Path(os.environ.get("RG_TOOLS_CACHE", Path.home() / ".cache" / "releasegate" / "tools"))
    binary = cache / f"actionlint-{version.group(1)}"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: `deploy/stack.sh install` builds it", pytrace=False)
    return binary


def lint_as_project(tmp_path: Path, workflow: str) -> subprocess.CompletedProcess:
    """actionlint resolves local actions only inside a project (a git checkout with .github/workflows)."""
    (tmp_path / ".git").mkdir()
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    shutil.copytree(INTEGRATIONS, tmp_path / "integrations")
    (tmp_path / ".github" / "workflows" / "release.yml").write_text(workflow)
    return subprocess.run(
        [str(actionlint()), "-no-color", ".github/workflows/release.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


class TestActionlint:
    def test_the_example_workflow_and_the_action_it_uses_are_clean(self, tmp_path):
        done = lint_as_project(tmp_path, WORKFLOW.read_text())
        assert done.returncode == 0, done.stdout + done.stderr

    @pytest.mark.parametrize(
        ("edit", "complaint"),
        [
            (
                lambda w: w.replace("candidate: candidate.json", "candidate: candidate.json\n          bogus: x"),
                'input "bogus" is not defined in action "releasegate release"',
            ),
            (
                lambda w: w.replace("          candidate: candidate.json\n", ""),
                'missing input "candidate" which is required by action "releasegate release"',
            ),
            (
                lambda w: w.replace("steps.releasegate.outputs.release-url", "steps.releasegate.outputs.url"),
                'property "url" is not defined in object type',
            ),
        ],
        ids=["unknown-input", "missing-required-input", "unknown-output"],
    )
    def test_reads_the_actions_metadata(self, tmp_path, edit, complaint):
        # negative controls: the clean run above means something only if actionlint does look into the action
        changed = edit(WORKFLOW.read_text())
        assert changed != WORKFLOW.read_text()
        done = lint_as_project(tmp_path, changed)
        assert done.returncode == 1
        assert complaint in done.stdout


def shellcheck() -> str:
    found = shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck is missing: `deploy/stack.sh install` installs it", False)
    return found


class TestShellcheck:
    def test_the_actions_step_script(self, tmp_path):
        [step] = yaml.safe_load(ACTION.read_text())["runs"]["steps"]
        script = tmp_path / "step.sh"
        script.write_text("#!/usr/bin/env bash\n" + step["run"])
        done = subprocess.run([shellcheck(), str(script)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout

    def test_the_gitlab_jobs_script(self, tmp_path):
        job = yaml.safe_load(TEMPLATE.read_text())[".releasegate-release"]
        script = tmp_path / "job.sh"
        script.write_text("#!/bin/sh\n" + "\n".join(job["script"]) + "\n")
        done = subprocess.run([shellcheck(), str(script)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout

    def test_the_tools_component(self):
        done = subprocess.run([shellcheck(), "-x", str(TOOLS)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(
    ("path", "schema"), [(ACTION, "vendor.github-actions"), (WORKFLOW, "vendor.github-workflows")], ids=lambda p: str(p)
)
def test_schemastore_schema(path, schema):
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
