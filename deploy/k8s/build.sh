#!/usr/bin/env bash
# Build a real Kubernetes control plane from Go modules (no Docker): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok, helm; fetch the Gateway API CRDs.
# Cached outside the clone (RG_K8S_CACHE, default ~/.cache/releasegate/k8s) with Go's own module and
# build caches beside it, so a fresh clone on the same machine reuses everything. Idempotent.
set -euo pipefail

K8S_VERSION=v1.34.4
STAGING_VERSION=v0.34.4
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.21.4
GATEWAY_API_VERSION=v1.6.3

CACHE=${RG_K8S_CACHE:-$HOME/.cache/releasegate/k8s}
BIN=$CACHE/bin
STAMP=$CACHE/.built-$K8S_VERSION-$KWOK_VERSION-$HELM_VERSION-$GATEWAY_API_VERSION
export GOMODCACHE=${GOMODCACHE:-$HOME/.cache/releasegate/gomod}
export GOCACHE=${GOCACHE:-$HOME/.cache/releasegate/gobuild}
export GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=local

if [[ -f $STAMP && -x $BIN/kube-apiserver && -x $BIN/etcd && -x $BIN/kwok && -x $BIN/helm ]]; then
  echo "k8s control plane: cached in $CACHE"; exit 0
fi
mkdir -p "$BIN" "$CACHE/crds" "$CACHE/kwok"
log() { echo "[k8s build $(date +%H:%M:%S)] $*"; }

# 1. A wrapper module pinning k8s.io/kubernetes and its staging modules to their published versions.
W=$CACHE/wrapper
mkdir -p "$W"
cd "$W"
cat > go.mod <<GOMOD
module releasegate.local/k8swrapper

go 1.24

require k8s.io/kubernetes $K8S_VERSION
GOMOD
log "downloading k8s.io/kubernetes $K8S_VERSION"
KDIR=$(go mod download -json k8s.io/kubernetes@$K8S_VERSION | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
# every `k8s.io/x => ./staging/src/k8s.io/x` of kubernetes' own go.mod becomes `=> k8s.io/x v0.34.4`
python3 - "$KDIR/go.mod" "$STAGING_VERSION" >> go.mod <<'PY'
import re, sys
text = open(sys.argv[1]).read()
mods = sorted(set(re.findall(r"^\s*(k8s\.io/[\w./-]+)\s+=>\s+\./staging/", text, re.M)))
print("replace (")
for m in mods:
    print(f"\t{m} => {m} {sys.argv[2]}")
print(")")
PY
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
log "go mod tidy"
go mod tidy -e >/dev/null 2>&1 || true
go get go.etcd.io/etcd/server/v3 2>/dev/null || true
go mod tidy
LD="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  if [[ ! -x $BIN/$cmd ]]; then
    log "building $cmd"
    go build -trimpath -ldflags "$LD" -o "$BIN/$cmd.tmp" k8s.io/kubernetes/cmd/$cmd && mv "$BIN/$cmd.tmp" "$BIN/$cmd"
  fi
done
if [[ ! -x $BIN/etcd ]]; then
  log "building etcd"
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3 && mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

# 2. kwok and helm: plain go install at pinned versions.
if [[ ! -x $BIN/kwok ]]; then
  log "building kwok $KWOK_VERSION"
  GOBIN=$BIN go install -trimpath -ldflags "-s -w" sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION
fi
KWOK_DIR=$(cd "$CACHE" && go mod download -json sigs.k8s.io/kwok@$KWOK_VERSION | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
rm -rf "$CACHE/kwok/stage"; cp -r "$KWOK_DIR/kustomize/stage" "$CACHE/kwok/stage"; chmod -R u+w "$CACHE/kwok"
if [[ ! -x $BIN/helm ]]; then
  log "building helm $HELM_VERSION"
  GOBIN=$BIN go install -trimpath -ldflags "-s -w" helm.sh/helm/v3/cmd/helm@$HELM_VERSION
fi

# 3. Gateway API CRDs (standard channel) from the module.
GW_DIR=$(cd "$CACHE" && go mod download -json sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
rm -f "$CACHE/crds/"*.yaml; cp "$GW_DIR"/config/crd/standard/*.yaml "$CACHE/crds/"; chmod u+w "$CACHE/crds/"*.yaml

"$BIN/kube-apiserver" --version
touch "$STAMP"
log "done: $(ls "$BIN" | tr '\n' ' ')"
