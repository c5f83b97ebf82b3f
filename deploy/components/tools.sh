#!/usr/bin/env bash
# Linters for the CI integrations (integrations/, tests/integrations/test_lint.py): actionlint built from its Go
# module into ~/.cache/releasegate/tools (once per version, Go's module and build caches beside the k8s build's),
# and Debian's shellcheck, which actionlint also runs on the workflows' scripts. Install-only.
# Sourced by deploy/stack.sh after common.sh; defines tools_{packages,install,up,down,status}.

ACTIONLINT_VERSION=v1.7.12   # tests/integrations/test_lint.py reads this line
TOOLS_CACHE="${RG_TOOLS_CACHE:-$HOME/.cache/releasegate/tools}"
ACTIONLINT="$TOOLS_CACHE/actionlint-$ACTIONLINT_VERSION"

tools_packages() {
  command -v shellcheck >/dev/null 2>&1 || echo shellcheck
}

tools_install() {
  if [[ -x "$ACTIONLINT" ]]; then
    log "tools: actionlint $ACTIONLINT_VERSION present in $TOOLS_CACHE"
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "tools: building actionlint needs Go (1.24 or newer) on the PATH"
  log "tools: building actionlint $ACTIONLINT_VERSION from its Go module"
  mkdir -p "$TOOLS_CACHE"
  local bin="$TOOLS_CACHE/.build.$$"
  rm -rf "$bin"
  # a subshell: the Go settings stay out of the rest of the install
  (
    export GOMODCACHE="${GOMODCACHE:-$HOME/.cache/releasegate/gomod}" GOCACHE="${GOCACHE:-$HOME/.cache/releasegate/gobuild}"
    export GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN="$bin"
    go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  ) >&2 || { rm -rf "$bin"; die "tools: building actionlint failed"; }
  mv -f "$bin/actionlint" "$ACTIONLINT"
  rm -rf "$bin"
  "$ACTIONLINT" -version >&2
}

tools_up() { :; }
tools_down() { :; }

tools_status() {
  if [[ -x "$ACTIONLINT" ]]; then component_line tools "actionlint $ACTIONLINT_VERSION"; else
    component_line tools "actionlint missing (deploy/stack.sh install)"
    return 1
  fi
}
