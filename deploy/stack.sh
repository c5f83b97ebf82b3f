#!/usr/bin/env bash
# Local stack without Docker: Kafka (KRaft, from Maven jars), PostgreSQL 15, HAProxy 2.6, Varnish 7.1 (the edge
# cache), Prometheus, payment and ERP sandboxes. Each component is a file in deploy/components/ defining
# <name>_{packages,install,up,down,status}; this script only dispatches. Ports, paths and contracts:
# docs/local-stack.md.
#
#   deploy/stack.sh install [--force-pip]   packages, Kafka jars, `pip install -e .[dev]` (idempotent)
#   deploy/stack.sh up                      start whatever is not healthy, wait until healthy (idempotent)
#   deploy/stack.sh down                    stop everything, incl. every process with a pidfile in .run/pids
#   deploy/stack.sh reset                   down (the Kubernetes test cluster too) + delete .run/
#   deploy/stack.sh status                  one line per component; exit 1 if a component is down
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true   # bash 5.2: keep '&' literal in ${var//pat/rep}

# The daemons started here (PostgreSQL, Kafka, HAProxy, ...) must not inherit what the caller had open: a
# `flock /tmp/rg-stack.lock make stack` would otherwise stay locked for as long as PostgreSQL runs.
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  if [[ $fd =~ ^[0-9]+$ ]] && (( fd > 2 && fd < 255 )); then eval "exec $fd>&-" 2>/dev/null || true; fi
done

COMPONENTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/components"
# shellcheck source=components/common.sh
source "$COMPONENTS_DIR/common.sh"
cd "$ROOT"

# in start order; `down` stops them in reverse, after every other process with a pidfile
COMPONENTS=(postgres kafka haproxy varnish prometheus payment erp sink oidc tools dashboard)
for c in python "${COMPONENTS[@]}"; do
  # shellcheck source=/dev/null
  source "$COMPONENTS_DIR/$c.sh"
done

cmd_install() {
  local force_pip=0 a c
  for a in "$@"; do
    case "$a" in
      --force-pip) force_pip=1 ;;
      *) die "install: unknown option $a" ;;
    esac
  done
  local -a pkgs=()
  for c in "${COMPONENTS[@]}"; do
    while IFS= read -r a; do [[ -n "$a" ]] && pkgs+=("$a"); done < <("${c}_packages")
  done
  if [[ ${#pkgs[@]} -gt 0 ]]; then
    is_root || die "missing packages (${pkgs[*]}); run 'deploy/stack.sh install' as root or install them"
    log "apt-get install ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"
  else
    log "system packages present (postgresql, haproxy, prometheus, java)"
  fi
  for c in "${COMPONENTS[@]}"; do "${c}_install"; done
  python_install "$force_pip"
}

cmd_up() {
  local c
  mkdir -p "$RUN_DIR" "$PID_DIR" "$LOG_DIR"
  "$PYTHON" -m releasegate_runtime.secrets --dir "$SECRETS_DIR" >&2
  for c in "${COMPONENTS[@]}"; do "${c}_up" || die "$c: not healthy"; done
  log "stack is up"
}

# the names deploy/proc.sh knows that belong to a component stopped in its own order below
OWN_PROCS=(kafka payment-sandbox erp-sandbox notify-sink oidc)

proc_others() {  # every process with a pidfile in .run/pids, except OWN_PROCS
  local n o skip
  while IFS= read -r n; do
    [[ -n "$n" ]] || continue
    skip=0
    for o in "${OWN_PROCS[@]}"; do [[ "$n" == "$o" ]] && skip=1; done
    [[ $skip -eq 1 ]] || echo "$n"
  done < <("$PROC" list)
}

cmd_down() {
  haproxy_down
  # services and shop instances started by others (pidfiles in .run/pids), in parallel, before the
  # infrastructure they depend on
  local -a others=()
  local n i
  while IFS= read -r n; do others+=("$n"); done < <(proc_others)
  if [[ ${#others[@]} -gt 0 ]]; then "$PROC" stop "${others[@]}" >&2; fi
  for (( i = ${#COMPONENTS[@]} - 1; i >= 0; i-- )); do
    [[ "${COMPONENTS[$i]}" == haproxy ]] || "${COMPONENTS[$i]}_down"
  done
  # anything that appeared meanwhile
  others=()
  while IFS= read -r n; do [[ -n "$n" ]] && others+=("$n"); done < <("$PROC" list)
  if [[ ${#others[@]} -gt 0 ]]; then "$PROC" stop "${others[@]}" >&2; fi
  log "stack is down"
}

cmd_reset() {
  cmd_down
  # the Kubernetes test cluster keeps its pids under .run/k8s: stop it before they are deleted
  if [[ -f "$(dirname "$0")/k8s/cluster.sh" ]]; then bash "$(dirname "$0")/k8s/cluster.sh" down; fi
  log "deleting $RUN_DIR"
  rm -rf "$RUN_DIR"
}

cmd_status() {
  local rc=0 c
  for c in "${COMPONENTS[@]}"; do "${c}_status" || rc=1; done
  return $rc
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  up)      cmd_up ;;
  down)    cmd_down ;;
  reset)   cmd_reset ;;
  status)  cmd_status ;;
  *) echo "usage: deploy/stack.sh install [--force-pip] | up | down | reset | status" >&2; exit 2 ;;
esac
