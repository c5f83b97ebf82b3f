#!/usr/bin/env bash
# Starts / stops releasegate's six services and the shop team's three verifiers, each its own OS process under a
# supervisor that restarts it when it dies (1 s doubling to 30 s; python -m releasegate_runtime.supervise). Logs of
# both in .run/logs/rg-<name>.log; pid, uptime and crash count in .run/supervise/rg-<name>.json.
#   services.sh start | stop | status
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROC="$ROOT/deploy/proc.sh"
PY="${PYTHON:-python3}"
# Python modules run as `python -m <module>`; the process name is rg-<last part, dashed>.
MODULES=(services.coordinator services.gatekeeper services.dr_checker services.deployer services.verifier
         services.rollback verifiers.erp_export verifiers.tax verifiers.inventory_latency)
HEALTH_BASE=18500   # GET http://127.0.0.1:<18501..18509>/health, in the order above

name_of() { local s="${1##*.}"; echo "rg-${s//_/-}"; }

case "${1:-}" in
  start)
    cd "$ROOT"
    # The local stack has no freeze windows (the demo must behave the same on any day); production installs
    # point RG_CALENDAR_FILE at their calendar, e.g. policies/calendar.yaml.
    export RG_CALENDAR_FILE="${RG_CALENDAR_FILE:-$ROOT/deploy/local/calendar.yaml}"
    # the local stack: the only place demo keys are trusted; each service authenticates to Kafka as its own
    # principal (its name) with its password from .run/secrets/kafka/
    export RG_ENV="${RG_ENV:-local}"
    # every other RG_* setting passes through from the caller's environment to every service, e.g. the kubeconfigs
    # of environments on a kubernetes target: RG_KUBECONFIG (read by the deployer only) and RG_ROLLBACK_KUBECONFIG
    # (read by the rollback service only: it acts as its own ServiceAccount, never as the deployer's)
    i=0
    for m in "${MODULES[@]}"; do
      i=$((i + 1))
      n="$(name_of "$m")"
      RG_HEALTH_PORT=$((HEALTH_BASE + i)) "$PROC" start "$n" -- "$PY" -m releasegate_runtime.supervise run "$n" -- \
          "$PY" -m "$m"
    done
    i=0
    for m in "${MODULES[@]}"; do
      i=$((i + 1)); deadline=$((SECONDS + 60)); n="$(name_of "$m")"
      until curl -fsS "http://127.0.0.1:$((HEALTH_BASE + i))/health" >/dev/null 2>&1; do
        if (( SECONDS > deadline )) || ! "$PROC" alive "$n"; then
          echo "$n not healthy; last log lines:" >&2
          tail -n 20 "$ROOT/.run/logs/$n.log" >&2
          "$PY" -m releasegate_runtime.supervise status "$n" >&2 || true
          exit 1
        fi
        sleep 0.2
      done
      echo "$n healthy"
    done ;;
  stop)
    names=(); for m in "${MODULES[@]}"; do names+=("$(name_of "$m")"); done
    "$PROC" stop "${names[@]}" ;;
  status)
    # from each supervisor's state: running (child pid, uptime), restarting, stopped or down; crash count
    cd "$ROOT"; names=(); for m in "${MODULES[@]}"; do names+=("$(name_of "$m")"); done
    "$PY" -m releasegate_runtime.supervise status "${names[@]}" ;;
  *) echo "usage: services.sh start|stop|status" >&2; exit 2 ;;
esac
