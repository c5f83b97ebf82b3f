#!/usr/bin/env bash
# HAProxy 2.6: the shop's front door (production :18080, staging :18081), runtime API on an owner-only socket.
# Sourced by deploy/stack.sh after common.sh; defines haproxy_{packages,install,up,down,status}.

HAPROXY_RUN="$RUN_DIR/haproxy"
HAPROXY_CFG="$HAPROXY_RUN/haproxy.cfg"
HAPROXY_PID="$HAPROXY_RUN/haproxy.pid"
HAPROXY_ADMIN_SOCK="$HAPROXY_RUN/admin.sock"   # the runtime API: owner-only unix socket, no TCP
HAPROXY_CANARY_KEY="$SECRETS_DIR/haproxy/canary.key"   # signs canary cookies (releasegate_runtime/secrets.py)

haproxy_pid() {
  local pid
  [[ -f "$HAPROXY_PID" ]] || return 1
  pid="$(head -n 1 "$HAPROXY_PID" | tr -dc '0-9')"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

haproxy_alive() { haproxy_pid >/dev/null; }

haproxy_healthy() {
  "$PYTHON" - "$HAPROXY_ADMIN_SOCK" <<'PY' >/dev/null 2>&1
import socket, sys, urllib.request
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.settimeout(2)
    s.connect(sys.argv[1])
    s.sendall(b"show info\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
assert b"Name: HAProxy" in data, data
with urllib.request.urlopen("http://127.0.0.1:18404/metrics", timeout=2) as r:
    assert r.status == 200
PY
}

# The canary cookie key reaches HAProxy in its environment only (never in a file but the owner-only secret); the
# rendered configuration carries the key's id (a digest prefix, which says nothing about the key), so a new key is a
# changed configuration and restarts HAProxy with it.
haproxy_canary_key() {
  tr -d '[:space:]' < "$HAPROXY_CANARY_KEY"
}

haproxy_render() {  # haproxy_render DST
  local key_id
  [[ -s "$HAPROXY_CANARY_KEY" ]] \
    || die "haproxy: no canary cookie key $HAPROXY_CANARY_KEY (made by: $PYTHON -m releasegate_runtime.secrets --dir $SECRETS_DIR)"
  key_id="$(haproxy_canary_key | sha256sum | cut -c1-16)"
  render "$ROOT/deploy/haproxy/haproxy.cfg" "$1" "HAPROXY_RUN_DIR=$HAPROXY_RUN" "CANARY_KEY_ID=$key_id"
}

haproxy_up() {
  mkdir -p "$HAPROXY_RUN"
  haproxy_render "$HAPROXY_CFG.next"
  if haproxy_alive && haproxy_healthy; then
    if cmp -s "$HAPROXY_CFG.next" "$HAPROXY_CFG"; then
      rm -f "$HAPROXY_CFG.next"
      log "haproxy: already healthy"
      return 0
    fi
    # a changed template must not leave a stale HAProxy running (runtime state is re-applied by the deployer)
    log "haproxy: configuration changed, restarting"
    haproxy_down
  fi
  rm -f "$HAPROXY_CFG.next"
  command -v haproxy >/dev/null 2>&1 || die "haproxy not installed: run deploy/stack.sh install"
  if haproxy_alive; then
    log "haproxy: process alive but unhealthy, restarting"
    haproxy_down
  fi
  mkdir -p "$HAPROXY_RUN" "$LOG_DIR"
  # tenant routes start empty at every HAProxy start (the runtime API edits them; the deployer reconciles)
  : > "$HAPROXY_RUN/tenants-production.map"
  : > "$HAPROXY_RUN/maintenance-production.map"
  haproxy_render "$HAPROXY_CFG"
  if ! RG_CANARY_KEY="$(haproxy_canary_key)" haproxy -c -q -f "$HAPROXY_CFG" >>"$LOG_DIR/haproxy.log" 2>&1; then
    tail_log "$LOG_DIR/haproxy.log"
    die "haproxy: config check failed for $HAPROXY_CFG"
  fi
  rm -f "$HAPROXY_RUN/admin.sock"
  log "haproxy: starting"
  if ! RG_CANARY_KEY="$(haproxy_canary_key)" haproxy -D -p "$HAPROXY_PID" -f "$HAPROXY_CFG" >>"$LOG_DIR/haproxy.log" 2>&1; then
    tail_log "$LOG_DIR/haproxy.log"
    die "haproxy: failed to start"
  fi
  wait_until haproxy 20 "$LOG_DIR/haproxy.log" haproxy_healthy haproxy_alive || die "haproxy: not healthy"
}

haproxy_down() {
  local pid deadline
  pid="$(haproxy_pid)" || { rm -f "$HAPROXY_PID"; return 0; }
  log "haproxy: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( $(now_ms) + 10000 ))
  while kill -0 "$pid" 2>/dev/null && (( $(now_ms) < deadline )); do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$HAPROXY_PID" "$HAPROXY_RUN/admin.sock"
}

haproxy_packages() { command -v haproxy >/dev/null 2>&1 || echo haproxy; }
haproxy_install() { :; }

haproxy_status() {
  if haproxy_alive && haproxy_healthy; then component_line haproxy healthy; else component_line haproxy down; return 1; fi
}
