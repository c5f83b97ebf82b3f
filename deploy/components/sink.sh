#!/usr/bin/env bash
# The local notification receiver (deploy/local/notify_sink.py) on 127.0.0.1:19500: the shop's Slack route
# (secret notifier/ops-slack.url, written here unless the operator has one) points at it, and what it receives is
# appended to .run/logs/notify-sink.jsonl. Sourced by deploy/stack.sh after common.sh; defines
# sink_{packages,install,up,down,status}.

SINK_PORT=19500
SINK_URL="http://127.0.0.1:$SINK_PORT/slack/ops"
SINK_LOG="$LOG_DIR/notify-sink.jsonl"

sink_alive() { "$PROC" alive notify-sink; }

sink_healthy() {
  "$PYTHON" - "$SINK_PORT" <<'PY' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

sink_up() {
  # an operator's own webhook URL in the secret is kept (the notifier then sends there, not here)
  "$PYTHON" -m releasegate_runtime.secrets --dir "$SECRETS_DIR" --notify-sink "$SINK_URL" >&2
  if sink_healthy; then log "notify-sink: already healthy"; return 0; fi
  if sink_alive; then
    log "notify-sink: alive but unhealthy, restarting"
    "$PROC" stop notify-sink >&2
  fi
  mkdir -p "$LOG_DIR" "$PID_DIR"
  "$PROC" start notify-sink -- "$PYTHON" "$ROOT/deploy/local/notify_sink.py" --port "$SINK_PORT" --log "$SINK_LOG" >&2
  wait_until notify-sink 30 "$LOG_DIR/notify-sink.log" sink_healthy sink_alive || die "notify-sink: not healthy"
}

sink_packages() { :; }
sink_install() { :; }
sink_down() { "$PROC" stop notify-sink >&2; }

sink_status() {
  if sink_healthy; then component_line notify-sink healthy; else component_line notify-sink down; return 1; fi
}
