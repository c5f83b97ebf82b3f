#!/usr/bin/env bash
# The local OpenID Connect provider (deploy/oidc, npm oidc-provider) on 127.0.0.1:19400: people sign in to the
# dashboard and the CLI, CI clients mint GitHub- and GitLab-shaped tokens; the API trusts it (RG_OIDC_ISSUER).
# Sourced by deploy/stack.sh after common.sh; defines oidc_{packages,install,up,down,status}.

OIDC_DIR="$ROOT/deploy/oidc"
OIDC_ISSUER="${RG_OIDC_ISSUER:-http://127.0.0.1:19400}"
OIDC_STAMP="$OIDC_DIR/node_modules/.releasegate-lock.sha256"

oidc_alive() { "$PROC" alive oidc; }
oidc_healthy() { curl -fsS --max-time 2 "$OIDC_ISSUER/.well-known/openid-configuration" >/dev/null 2>&1; }
oidc_lock_sum() { sha256sum "$OIDC_DIR/package-lock.json" | cut -d' ' -f1; }

oidc_packages() {
  command -v node >/dev/null 2>&1 || echo nodejs
  command -v npm >/dev/null 2>&1 || echo npm
}

# npm ci only when node_modules was not installed from this very package-lock.json
oidc_install() {
  if [[ -f "$OIDC_STAMP" && "$(cat "$OIDC_STAMP")" == "$(oidc_lock_sum)" ]]; then
    log "oidc: node modules present"
    return 0
  fi
  log "oidc: npm ci in deploy/oidc"
  (cd "$OIDC_DIR" && npm ci --omit=dev --no-audit --no-fund --loglevel=error) \
    || { log "npm ci failed; retrying once"; sleep 5; (cd "$OIDC_DIR" && npm ci --omit=dev --no-audit --no-fund --loglevel=error); }
  oidc_lock_sum > "$OIDC_STAMP"
}

oidc_up() {
  if oidc_healthy; then log "oidc: already healthy"; return 0; fi
  [[ -d "$OIDC_DIR/node_modules/oidc-provider" ]] || die "oidc: node modules missing: run deploy/stack.sh install"
  if oidc_alive; then "$PROC" stop oidc >&2; fi
  mkdir -p "$LOG_DIR"
  (cd "$OIDC_DIR" && RG_OIDC_ISSUER="$OIDC_ISSUER" RG_SECRETS_DIR="$SECRETS_DIR" "$PROC" start oidc -- node server.js >&2)
  wait_until oidc 30 "$LOG_DIR/oidc.log" oidc_healthy oidc_alive || die "oidc: not healthy"
}

oidc_down() { "$PROC" stop oidc >&2; }

oidc_status() {
  if oidc_healthy; then component_line oidc healthy; else component_line oidc down; return 1; fi
}
