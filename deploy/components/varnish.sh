#!/usr/bin/env bash
# Varnish 7.1 (Debian): the storefront's edge cache on 127.0.0.1:18088, in front of HAProxy's production frontend;
# management CLI on 127.0.0.1:18089, authenticated by the secret .run/secrets/varnish/secret (owner-only, made by
# releasegate_runtime/secrets.py); HTTP PURGE/BAN are refused by the VCL.
# VCL and settings: deploy/varnish/. Sourced by deploy/stack.sh after common.sh; defines varnish_{packages,install,
# up,down,status}.

VARNISH_RUN="$RUN_DIR/varnish"
VARNISH_WORK="$VARNISH_RUN/work"   # varnishd's -n directory (shared memory log, compiled VCL)
VARNISH_VCL="$VARNISH_RUN/default.vcl"
VARNISH_PID="$VARNISH_RUN/varnishd.pid"
VARNISH_SECRET="$SECRETS_DIR/varnish/secret"
VARNISH_PARAMS="$ROOT/deploy/varnish/varnish.params"

varnish_param() {  # varnish_param KEY: its value in deploy/varnish/varnish.params
  sed -n "s/^$1=//p" "$VARNISH_PARAMS" | head -n 1
}

varnish_pid() {
  local pid
  [[ -f "$VARNISH_PID" ]] || return 1
  pid="$(head -n 1 "$VARNISH_PID" | tr -dc '0-9')"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

varnish_alive() { varnish_pid >/dev/null; }

varnish_healthy() {
  varnishadm -T "$(varnish_param EDGE_ADMIN)" -S "$VARNISH_SECRET" status 2>/dev/null | grep -q "running"
}

varnish_render() {  # varnish_render DST
  local origin
  origin="$(varnish_param EDGE_ORIGIN)"
  render "$ROOT/deploy/varnish/default.vcl" "$1" "ORIGIN_HOST=${origin%:*}" "ORIGIN_PORT=${origin##*:}"
}

varnish_up() {
  command -v varnishd >/dev/null 2>&1 || die "varnish not installed: run deploy/stack.sh install"
  mkdir -p "$VARNISH_RUN" "$LOG_DIR"
  [[ -s "$VARNISH_SECRET" ]] \
    || die "varnish: no management secret $VARNISH_SECRET (made by: $PYTHON -m releasegate_runtime.secrets --dir $SECRETS_DIR)"
  varnish_render "$VARNISH_VCL.next"
  if varnish_alive && varnish_healthy; then
    # a changed VCL or changed settings (ports, storage, TTL) must not leave the old varnishd running
    if cmp -s "$VARNISH_VCL.next" "$VARNISH_VCL" && cmp -s "$VARNISH_PARAMS" "$VARNISH_RUN/varnish.params"; then
      rm -f "$VARNISH_VCL.next"
      log "varnish: already healthy"
      return 0
    fi
    log "varnish: configuration changed, restarting"
    varnish_down
  fi
  rm -f "$VARNISH_VCL.next"
  if varnish_alive; then
    log "varnish: process alive but unhealthy, restarting"
    varnish_down
  fi
  varnish_render "$VARNISH_VCL"
  cp "$VARNISH_PARAMS" "$VARNISH_RUN/varnish.params"
  mkdir -p "$VARNISH_WORK"
  log "varnish: starting"
  # -j none when not root: the jail needs root to drop to the varnish user; as root the default unix jail is used
  local -a jail=()
  is_root || jail=(-j none)
  if ! varnishd "${jail[@]}" -n "$VARNISH_WORK" -P "$VARNISH_PID" -f "$VARNISH_VCL" \
      -a "$(varnish_param EDGE_LISTEN)" -T "$(varnish_param EDGE_ADMIN)" -S "$VARNISH_SECRET" \
      -s "$(varnish_param EDGE_STORAGE)" -t "$(varnish_param EDGE_DEFAULT_TTL)" >>"$LOG_DIR/varnish.log" 2>&1; then
    tail_log "$LOG_DIR/varnish.log"
    die "varnish: failed to start"
  fi
  wait_until varnish 20 "$LOG_DIR/varnish.log" varnish_healthy varnish_alive || die "varnish: not healthy"
}

varnish_down() {
  local pid deadline
  pid="$(varnish_pid)" || { rm -f "$VARNISH_PID"; return 0; }
  log "varnish: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( $(now_ms) + 10000 ))
  while kill -0 "$pid" 2>/dev/null && (( $(now_ms) < deadline )); do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$VARNISH_PID"
}

varnish_packages() { command -v varnishd >/dev/null 2>&1 || echo varnish; }
varnish_install() { :; }

varnish_status() {
  if varnish_alive && varnish_healthy; then component_line varnish healthy; else component_line varnish down; return 1; fi
}
