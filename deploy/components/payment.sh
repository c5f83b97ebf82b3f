#!/usr/bin/env bash
# The payment provider's sandbox (shop/payment_sandbox.py) on 127.0.0.1:18090.
# Sourced by deploy/stack.sh after common.sh; defines payment_{packages,install,up,down,status}.

SANDBOX_PORT=18090
SANDBOX_MODULE_FILE="$ROOT/shop/payment_sandbox.py"

sandbox_alive() { "$PROC" alive payment-sandbox; }

sandbox_healthy() {
  "$PYTHON" - "$SANDBOX_PORT" <<'PY' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

sandbox_up() {
  if [[ ! -f "$SANDBOX_MODULE_FILE" ]]; then
    log "payment-sandbox: shop/payment_sandbox.py not present, skipped"
    return 0
  fi
  if sandbox_healthy; then log "payment-sandbox: already healthy"; return 0; fi
  if sandbox_alive; then
    log "payment-sandbox: alive but unhealthy, restarting"
    "$PROC" stop payment-sandbox >&2
  fi
  mkdir -p "$LOG_DIR" "$PID_DIR"
  "$PROC" start payment-sandbox -- "$PYTHON" -m shop.payment_sandbox --port "$SANDBOX_PORT" >&2
  wait_until payment-sandbox 30 "$LOG_DIR/payment-sandbox.log" sandbox_healthy sandbox_alive \
    || die "payment-sandbox: not healthy"
}

payment_packages() { :; }
payment_install() { :; }
payment_up() { sandbox_up; }
payment_down() { "$PROC" stop payment-sandbox >&2; }

payment_status() {
  if [[ ! -f "$SANDBOX_MODULE_FILE" ]]; then component_line payment-sandbox "down (shop/payment_sandbox.py absent)"; return 0; fi
  if sandbox_healthy; then component_line payment-sandbox healthy; else component_line payment-sandbox down; return 1; fi
}
