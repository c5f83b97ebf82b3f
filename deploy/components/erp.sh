#!/usr/bin/env bash
# The ERP's sandbox (shop/erp_sandbox.py) on 127.0.0.1:18091, failing a share of requests on purpose.
# Sourced by deploy/stack.sh after common.sh; defines erp_{packages,install,up,down,status}.

ERP_SANDBOX_PORT=18091
ERP_SANDBOX_MODULE_FILE="$ROOT/shop/erp_sandbox.py"
ERP_SANDBOX_FAIL_RATE="${ERP_SANDBOX_FAIL_RATE:-0.05}"   # transient 503s the shop's ERP exporter must ride out

erp_sandbox_alive() { "$PROC" alive erp-sandbox; }
erp_sandbox_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$ERP_SANDBOX_PORT/health" >/dev/null 2>&1; }

erp_sandbox_up() {
  if [[ ! -f "$ERP_SANDBOX_MODULE_FILE" ]]; then
    log "erp-sandbox: shop/erp_sandbox.py not present, skipped"
    return 0
  fi
  if erp_sandbox_healthy; then log "erp-sandbox: already healthy"; return 0; fi
  if erp_sandbox_alive; then
    log "erp-sandbox: alive but unhealthy, restarting"
    "$PROC" stop erp-sandbox >&2
  fi
  mkdir -p "$LOG_DIR" "$PID_DIR"
  "$PROC" start erp-sandbox -- "$PYTHON" -m shop.erp_sandbox --port "$ERP_SANDBOX_PORT" \
    --fail-rate "$ERP_SANDBOX_FAIL_RATE" >&2
  wait_until erp-sandbox 30 "$LOG_DIR/erp-sandbox.log" erp_sandbox_healthy erp_sandbox_alive \
    || die "erp-sandbox: not healthy"
}

erp_packages() { :; }
erp_install() { :; }
erp_up() { erp_sandbox_up; }
erp_down() { "$PROC" stop erp-sandbox >&2; }

erp_status() {
  if [[ ! -f "$ERP_SANDBOX_MODULE_FILE" ]]; then component_line erp-sandbox "down (shop/erp_sandbox.py absent)"; return 0; fi
  if erp_sandbox_healthy; then component_line erp-sandbox healthy; else component_line erp-sandbox down; return 1; fi
}
