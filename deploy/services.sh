#!/usr/bin/env bash
# Starts / stops releasegate's six services and the shop team's four verifiers, each its own OS process under a
# supervisor that restarts it when it dies (1 s doubling to 30 s; python -m releasegate_runtime.supervise). Logs of
# both in .run/logs/rg-<name>.log; pid, uptime and crash count in .run/supervise/rg-<name>.json.
#   services.sh start | stop | status | targets [DIR]
# RG_INSTANCES=N (1..5, default 1) starts N instances of each service but the API, in one consumer group per
# service: Kafka shares the release topics' partitions among them (a release stays on its partition, and moves
# with it when an instance dies). Instance k>1 is rg-<name>-<k>, health port HEALTH_BASE + 20*(k-1) + i.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROC="$ROOT/deploy/proc.sh"
PY="${PYTHON:-python3}"
# Python modules run as `python -m <module>`; the process name is rg-<last part, dashed>.
MODULES=(services.coordinator services.gatekeeper services.dr_checker services.deployer services.verifier
         services.rollback verifiers.erp_export verifiers.tax verifiers.inventory_latency services.notifier
         services.api verifiers.peak_load)
HEALTH_BASE=18500   # GET http://127.0.0.1:<18501..18510>/health, in the order above (18510: the notifier, 18511: the API,
                    # which serves HTTP on RG_API_PORT, default 18800; 18512: the peak-load verifier, last so that
                    # the ports before it stay as they were)

name_of() { local s="${1##*.}"; echo "rg-${s//_/-}"; }
INSTANCES="${RG_INSTANCES:-1}"
if ! [[ "$INSTANCES" =~ ^[1-5]$ ]]; then echo "RG_INSTANCES must be 1..5, got '$INSTANCES'" >&2; exit 2; fi
# "<process name> <health port> <module>" of every process: instance 1 of each module, then the further instances
# (not of the API: it serves one HTTP port, RG_API_PORT)
processes() {
  local k i m n
  for k in $(seq 1 "$INSTANCES"); do
    i=0
    for m in "${MODULES[@]}"; do
      i=$((i + 1)); n="$(name_of "$m")"
      if (( k == 1 )); then echo "$n $((HEALTH_BASE + i)) $m"
      elif [[ "$m" != services.api ]]; then echo "$n-$k $((HEALTH_BASE + 20 * (k - 1) + i)) $m"; fi
    done
  done
}
# the `component` label of a module's metrics (the Grafana dashboard and the alerting rules group by it)
component_of() {
  local s="${1##*.}"
  case "$1" in
    services.verifier) echo verifier-business-kpis ;;
    verifiers.*) echo "verifier-${s//_/-}" ;;
    *) echo "${s//_/-}" ;;
  esac
}
# Prometheus file_sd targets of every process a start runs (its health port serves /metrics), labelled with the
# component and the process name: every instance of RG_INSTANCES is scraped. Written whole, then renamed.
write_targets() {
  local dir="${1:-$ROOT/.run/prometheus/targets-releasegate}" sep="" n port m
  mkdir -p "$dir"
  {
    echo "["
    while read -r n port m; do
      printf '%s  {"targets": ["127.0.0.1:%s"], "labels": {"component": "%s", "process": "%s"}}' \
        "$sep" "$port" "$(component_of "$m")" "$n"
      sep=$',\n'
    done < <(processes)
    printf '\n]\n'
  } > "$dir/.releasegate.json.new"
  mv "$dir/.releasegate.json.new" "$dir/releasegate.json"
}
# every name a start may have used (stop and status cover instances a larger RG_INSTANCES started before)
all_names() {
  local k m
  for m in "${MODULES[@]}"; do echo "$(name_of "$m")"; done
  for k in 2 3 4 5; do
    for m in "${MODULES[@]}"; do
      [[ "$m" != services.api ]] && [[ -e "$ROOT/.run/pids/$(name_of "$m")-$k.pid" ]] && echo "$(name_of "$m")-$k"
    done
  done
  return 0
}

case "${1:-}" in
  start)
    cd "$ROOT"
    write_targets
    # The local stack has no freeze windows (the demo must behave the same on any day); production installs
    # point RG_CALENDAR_FILE at their calendar, e.g. policies/calendar.yaml.
    export RG_CALENDAR_FILE="${RG_CALENDAR_FILE:-$ROOT/deploy/local/calendar.yaml}"
    # the local stack: the only place demo keys are trusted; each service authenticates to Kafka as its own
    # principal (its name) with its password from .run/secrets/kafka/
    export RG_ENV="${RG_ENV:-local}"
    # every other RG_* setting passes through from the caller's environment to every service, e.g. the kubeconfigs
    # of environments on a kubernetes target: RG_KUBECONFIG (read by the deployer only) and RG_ROLLBACK_KUBECONFIG
    # (read by the rollback service only: it acts as its own ServiceAccount, never as the deployer's)
    while read -r n port m; do
      RG_HEALTH_PORT=$port "$PROC" start "$n" -- "$PY" -m releasegate_runtime.supervise run "$n" -- "$PY" -m "$m" \
          </dev/null
    done < <(processes)
    while read -r n port m; do
      deadline=$((SECONDS + 60))
      until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
        if (( SECONDS > deadline )) || ! "$PROC" alive "$n"; then
          echo "$n not healthy; last log lines:" >&2
          tail -n 20 "$ROOT/.run/logs/$n.log" >&2
          "$PY" -m releasegate_runtime.supervise status "$n" >&2 </dev/null || true
          exit 1
        fi
        sleep 0.2
      done
      echo "$n healthy"
    done < <(processes) ;;
  stop)
    mapfile -t names < <(all_names)
    "$PROC" stop "${names[@]}" ;;
  status)
    # from each supervisor's state: running (child pid, uptime), restarting, stopped or down; crash count
    cd "$ROOT"; mapfile -t names < <(all_names)
    "$PY" -m releasegate_runtime.supervise status "${names[@]}" ;;
  targets) write_targets "${2:-}" ;;
  *) echo "usage: services.sh start|stop|status|targets [DIR]" >&2; exit 2 ;;
esac
