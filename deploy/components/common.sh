#!/usr/bin/env bash
# Shared by every component of the local stack (deploy/stack.sh sources this first): paths, logging, waiting,
# template rendering.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN_DIR="$ROOT/.run"
export RG_RUN_DIR="$RUN_DIR"   # proc.sh uses the same run dir
PID_DIR="$RUN_DIR/pids"
LOG_DIR="$RUN_DIR/logs"
PROC="$ROOT/deploy/proc.sh"
PYTHON="${PYTHON:-python3}"
SECRETS_DIR="$RUN_DIR/secrets"   # per-machine secrets (releasegate_runtime/secrets.py), never in the repository

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
is_root() { [[ "$(id -u)" -eq 0 ]]; }

tail_log() {
  local f="$1" n="${2:-40}"
  if [[ -f "$f" ]]; then
    echo "----- last $n lines of $f -----" >&2
    tail -n "$n" "$f" >&2 || true
    echo "-----" >&2
  else
    echo "(no log file $f)" >&2
  fi
}

# wait_until NAME TIMEOUT_S LOGFILE CHECK_FN [ALIVE_FN]: poll CHECK_FN until it succeeds or the deadline
# passes; fail fast when ALIVE_FN says the process died. On failure print the tail of LOGFILE.
wait_until() {
  local name="$1" timeout="$2" logfile="$3" check="$4" alive="${5:-}"
  local deadline=$(( $(now_ms) + timeout * 1000 )) start
  start=$(now_ms)
  while :; do
    if "$check"; then
      log "$name healthy after $(( ($(now_ms) - start) ))ms"
      return 0
    fi
    if [[ -n "$alive" ]] && ! "$alive"; then
      log "$name: process exited before becoming healthy"
      tail_log "$logfile"
      return 1
    fi
    if (( $(now_ms) >= deadline )); then
      log "$name: not healthy after ${timeout}s"
      tail_log "$logfile"
      return 1
    fi
    sleep 0.25
  done
}

render() {  # render SRC DST KEY=VALUE...
  local src="$1" dst="$2"; shift 2
  local content kv
  content="$(cat "$src")"
  for kv in "$@"; do
    content="${content//@${kv%%=*}@/${kv#*=}}"
  done
  printf '%s\n' "$content" > "$dst.tmp"
  mv -f "$dst.tmp" "$dst"
}

# component_line NAME STATE: one line of `deploy/stack.sh status`
component_line() { printf '%-16s %s\n' "$1" "$2"; }
