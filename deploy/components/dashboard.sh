#!/usr/bin/env bash
# The API's dashboard: its one third-party asset, Chart.js, installed with npm from services/api/ui/package-lock.json
# and copied to services/api/static/vendor/ (git-ignored), and Debian's chromium, the browser the dashboard tests
# drive with Playwright (tests/browser; Playwright's own browser downloads are never used). Install-only: the API
# serves the files. Sourced by deploy/stack.sh after common.sh; defines dashboard_{packages,install,up,down,status}.

DASHBOARD_UI="$ROOT/services/api/ui"
DASHBOARD_VENDOR="$ROOT/services/api/static/vendor"
DASHBOARD_NPM_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/releasegate/npm"
DASHBOARD_ASSETS=(chart.umd.min.js)   # what the pages load from /static/vendor/ (services/api/static/*.html)

# the lock file the vendored assets were built from: a changed lock means installing again
dashboard_lock_sum() { sha256sum "$DASHBOARD_UI/package-lock.json" | cut -d' ' -f1; }

dashboard_assets_ok() {
  local a
  for a in "${DASHBOARD_ASSETS[@]}"; do [[ -s "$DASHBOARD_VENDOR/$a" ]] || return 1; done
  [[ "$(cat "$DASHBOARD_VENDOR/.package-lock.sha256" 2>/dev/null)" == "$(dashboard_lock_sum)" ]]
}

dashboard_packages() {  # apt packages missing for the dashboard and its browser tests
  command -v npm >/dev/null 2>&1 || echo npm
  [[ -x /usr/bin/chromium ]] || echo chromium
  # a font for the pages' text (stack.sh installs without recommends, which is where chromium's font would come from)
  [[ -d /usr/share/fonts/truetype/dejavu ]] || echo fonts-dejavu-core
}

dashboard_install() {
  if dashboard_assets_ok; then
    log "dashboard: Chart.js present in services/api/static/vendor"
    return 0
  fi
  log "dashboard: npm ci in services/api/ui, Chart.js into services/api/static/vendor"
  mkdir -p "$DASHBOARD_NPM_CACHE"
  npm ci --prefix "$DASHBOARD_UI" --cache "$DASHBOARD_NPM_CACHE" --no-audit --no-fund --ignore-scripts >&2 \
    || die "dashboard: npm ci failed"
  local tmp="$DASHBOARD_VENDOR.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  cp "$DASHBOARD_UI/node_modules/chart.js/dist/chart.umd.min.js" "$tmp/"
  cp "$DASHBOARD_UI/node_modules/chart.js/LICENSE.md" "$tmp/chart.js.LICENSE.md"
  dashboard_lock_sum > "$tmp/.package-lock.sha256"
  rm -rf "$DASHBOARD_VENDOR"
  mv "$tmp" "$DASHBOARD_VENDOR"
  dashboard_assets_ok || die "dashboard: assets incomplete after npm ci"
}

dashboard_up() { :; }
dashboard_down() { :; }

dashboard_status() {
  if dashboard_assets_ok; then component_line dashboard "assets installed"; else
    component_line dashboard "assets missing (deploy/stack.sh install)"
    return 1
  fi
}
