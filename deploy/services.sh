#!/usr/bin/env bash
# Starts / stops releasegate's six services, each its own OS process (logs in .run/logs/rg-<name>.log).
#   services.sh start | stop | status
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROC="$ROOT/deploy/proc.sh"
PY="${PYTHON:-python3}"
SERVICES=(coordinator gatekeeper dr_checker deployer verifier rollback)

case "${1:-}" in
  start)
    cd "$ROOT"
    for s in "${SERVICES[@]}"; do
      "$PROC" start "rg-${s//_/-}" -- "$PY" -m "services.$s"
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
