#!/usr/bin/env bash
# Starts / stops releasegate's six services, each its own OS process (logs in .run/logs/rg-<name>.log).
#   services.sh start | stop | status
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROC="$ROOT/deploy/proc.sh"
PY="${PYTHON:-python3}"
SERVICES=(coordinator gatekeeper dr_checker deployer verifier rollback)
HEALTH_BASE=18500   # GET http://127.0.0.1:<18501..18506>/health, in the order above

case "${1:-}" in
  start)
    cd "$ROOT"
    # The local stack has no freeze windows (the demo must behave the same on any day); production installs
    # point RG_CALENDAR_FILE at their calendar, e.g. policies/calendar.yaml.
    export RG_CALENDAR_FILE="${RG_CALENDAR_FILE:-$ROOT/deploy/local/calendar.yaml}"
    i=0
    for s in "${SERVICES[@]}"; do
      i=$((i + 1))
      RG_HEALTH_PORT=$((HEALTH_BASE + i)) "$PROC" start "rg-${s//_/-}" -- "$PY" -m "services.$s"
    done
    i=0
    for s in "${SERVICES[@]}"; do
      i=$((i + 1)); deadline=$((SECONDS + 60))
      until curl -fsS "http://127.0.0.1:$((HEALTH_BASE + i))/health" >/dev/null 2>&1; do
        if (( SECONDS > deadline )) || ! "$PROC" alive "rg-${s//_/-}"; then
          echo "rg-${s//_/-} not healthy; last log lines:" >&2
          tail -n 20 "$ROOT/.run/logs/rg-${s//_/-}.log" >&2
          exit 1
        fi
        sleep 0.2
      done
      echo "rg-${s//_/-} healthy"
    done ;;
  stop)
    names=(); for s in "${SERVICES[@]}"; do names+=("rg-${s//_/-}"); done
    "$PROC" stop "${names[@]}" ;;
  status)
    for s in "${SERVICES[@]}"; do
      n="rg-${s//_/-}"; if "$PROC" alive "$n"; then echo "$n running"; else echo "$n down"; fi
    done ;;
  *) echo "usage: services.sh start|stop|status" >&2; exit 2 ;;
esac
