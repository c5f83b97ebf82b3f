#!/usr/bin/env bash
# The interpreters: the candidate runtime (a root-owned virtualenv candidates run with) and releasegate itself
# (`pip install -e .[dev]` from this checkout). Install-only components.
# Sourced by deploy/stack.sh after common.sh; defines python_{packages,install,up,down,status}.

# installed, and installed from this checkout (an editable install of another clone would run that clone's code)
releasegate_installed() {
  local where
  where="$(cd / && "$PYTHON" -c 'import contracts, os; print(os.path.dirname(os.path.dirname(contracts.__file__)))' 2>/dev/null)" || return 1
  [[ "$(realpath "$where")" == "$(realpath "$ROOT")" ]] || return 1
  requirements_met
}

# every requirement of pyproject.toml (dependencies and the dev extra) is installed at a version it allows: a
# dependency added since the last install (or a dev tool such as mypy) means installing again
requirements_met() {
  (cd / && "$PYTHON" - "$ROOT/pyproject.toml" <<'PY') >/dev/null 2>&1
import sys, tomllib
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
    req = Requirement(line)
    if req.marker and not req.marker.evaluate():
        continue
    try:
        installed = version(req.name)
    except PackageNotFoundError:
        sys.exit(f"{req.name} is not installed")
    if not req.specifier.contains(installed, prereleases=True):
        sys.exit(f"{req.name} {installed} does not satisfy {req}")
PY
}

# The interpreter candidate code runs with: the deployer starts candidates as the unprivileged user
# rg-candidate, which cannot read the developer's own Python (e.g. pyenv under /root). A root-owned,
# world-readable virtualenv from Debian's python3 with the shop runtime's libraries; the deployer puts it first
# on the candidates' PATH (RG_CANDIDATE_PATH, deploy/services.sh).
CANDIDATE_RUNTIME="${RG_CANDIDATE_RUNTIME:-/opt/releasegate/candidate-runtime}"
CANDIDATE_PACKAGES=("aiohttp==3.*" "aiokafka>=0.12,<0.15" "asyncpg>=0.29" "prometheus-client>=0.20")
candidate_runtime_install() {
  is_root || { log "not root: candidates run as this user, with this user's python"; return 0; }
  if [[ -x "$CANDIDATE_RUNTIME/bin/python" ]] && "$CANDIDATE_RUNTIME/bin/python" -c 'import aiohttp, aiokafka, asyncpg, prometheus_client' 2>/dev/null; then
    log "candidate runtime present in $CANDIDATE_RUNTIME"
    return 0
  fi
  [[ -x /usr/bin/python3 ]] || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-venv; }
  log "candidate runtime: virtualenv in $CANDIDATE_RUNTIME"
  rm -rf "$CANDIDATE_RUNTIME"
  mkdir -p "$(dirname "$CANDIDATE_RUNTIME")"
  /usr/bin/python3 -m venv "$CANDIDATE_RUNTIME"
  "$CANDIDATE_RUNTIME/bin/pip" install -q "${CANDIDATE_PACKAGES[@]}" || { sleep 5; "$CANDIDATE_RUNTIME/bin/pip" install -q "${CANDIDATE_PACKAGES[@]}"; }
  chmod -R go+rX "$CANDIDATE_RUNTIME" "$(dirname "$CANDIDATE_RUNTIME")"
}

python_packages() { :; }

python_install() {  # python_install FORCE_PIP(0|1)
  candidate_runtime_install
  if [[ "${1:-0}" -eq 1 ]] || ! releasegate_installed; then
    log "pip install -e '.[dev]'"
    # one retry: a transient index or metadata error must not fail a fresh machine's first run
    "$PYTHON" -m pip install -q -e "$ROOT[dev]" || { log "pip failed; retrying once"; sleep 5;
      "$PYTHON" -m pip install -q -e "$ROOT[dev]"; }
  else
    log "releasegate already installed (use --force-pip to reinstall)"
  fi
}

python_up() { :; }
python_down() { :; }
python_status() { :; }
