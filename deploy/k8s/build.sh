#!/usr/bin/env bash
# Build a real Kubernetes control plane from Go modules (no Docker): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok, helm; fetch the Gateway API CRDs.
# Cached outside the clone (RG_K8S_CACHE, default ~/.cache/releasegate/k8s) with Go's own module and
# build caches beside it, so a fresh clone on the same machine reuses everything. Idempotent.
set -euo pipefail

K8S_VERSION=v1.34.4
STAGING_VERSION=v0.34.4
ETCD_VERSION=v3.6.4    # the etcd k8s v1.34.4's own go.mod requires (server, client and api modules)
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.21.4
GATEWAY_API_VERSION=v1.6.3

CACHE=${RG_K8S_CACHE:-$HOME/.cache/releasegate/k8s}
BIN=$CACHE/bin
STAMP=$CACHE/.built-$K8S_VERSION-$ETCD_VERSION-$KWOK_VERSION-$HELM_VERSION-$GATEWAY_API_VERSION
export GOMODCACHE=${GOMODCACHE:-$HOME/.cache/releasegate/gomod}
export GOCACHE=${GOCACHE:-$HOME/.cache/releasegate/gobuild}
export GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=local

built() {
  [[ -f $STAMP && -x $BIN/kube-apiserver && -x $BIN/etcd && -x $BIN/kwok && -x $BIN/helm ]] &&
    compgen -G "$CACHE/.helm-$HELM_VERSION-*" >/dev/null
}
if built; then
  echo "k8s control plane: cached in $CACHE"; exit 0
fi
mkdir -p "$BIN" "$CACHE/crds" "$CACHE/kwok"
# one build at a time: a second caller (another `cluster.sh up`) waits, then finds the stamp of the first
exec 8>"$CACHE/.build.lock"
if ! flock -n 8; then
  echo "k8s control plane: another build is running in $CACHE; waiting for it" >&2
  flock 8
fi
if built; then
  echo "k8s control plane: cached in $CACHE"; exit 0
fi
log() { echo "[k8s build $(date +%H:%M:%S)] $*"; }

# 1. A wrapper module pinning k8s.io/kubernetes and its staging modules to their published versions (skipped when
# the stamp, which names every pinned version, says these binaries are built already)
if [[ ! -f $STAMP || ! -x $BIN/kube-apiserver || ! -x $BIN/etcd ]]; then
W=$CACHE/wrapper
mkdir -p "$W"
cd "$W"
cat > go.mod <<GOMOD
module releasegate.local/k8swrapper

go 1.24

require (
	k8s.io/kubernetes $K8S_VERSION
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
)
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
rm -f go.sum
go mod tidy
# nothing may drift past the pins (a bare `go get` once pulled etcd 3.7 and a newer gRPC into the apiserver)
for m in go.etcd.io/etcd/server/v3 go.etcd.io/etcd/client/v3; do
  got=$(go list -m -f '{{.Version}}' $m)
  [[ $got == "$ETCD_VERSION" ]] || { echo "k8s build: $m resolved to $got, not $ETCD_VERSION" >&2; exit 1; }
done
[[ $(go list -m -f '{{.Version}}' k8s.io/kubernetes) == "$K8S_VERSION" ]] || { echo "k8s build: k8s.io/kubernetes drifted" >&2; exit 1; }
LD="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
# (the stamp names every pinned version: when it is missing everything is rebuilt; a binary is replaced by a
# rename, so a running cluster keeps its old inode until it restarts)
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  log "building $cmd"
  go build -trimpath -ldflags "$LD" -o "$BIN/$cmd.tmp" k8s.io/kubernetes/cmd/$cmd && mv "$BIN/$cmd.tmp" "$BIN/$cmd"
done
log "building etcd $ETCD_VERSION"
go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3 && mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

# 2. kwok and helm: plain go install at pinned versions.
if [[ ! -x $BIN/kwok ]] || ! "$BIN/kwok" --version 2>/dev/null | grep -q "$KWOK_VERSION"; then
  log "building kwok $KWOK_VERSION"
  GOBIN=$BIN go install -trimpath -ldflags "-s -w" sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION
fi
KWOK_DIR=$(cd "$CACHE" && go mod download -json sigs.k8s.io/kwok@$KWOK_VERSION | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
rm -rf "$CACHE/kwok/stage"; cp -r "$KWOK_DIR/kustomize/stage" "$CACHE/kwok/stage"; chmod -R u+w "$CACHE/kwok"
# helm's default Kubernetes version (`helm template` without --kube-version) is the client-go it is built with, as
# its own Makefile sets it; unset, it claims v1.20 and refuses charts that need anything newer
HELM_DIR=$(cd "$CACHE" && go mod download -json helm.sh/helm/v3@$HELM_VERSION | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
HELM_KUBE_MINOR=$(sed -nE 's|^\s*k8s.io/client-go v0\.([0-9]+)\..*|\1|p' "$HELM_DIR/go.mod" | sed -n 1p)
[[ -n $HELM_KUBE_MINOR ]] || { echo "k8s build: no k8s.io/client-go in $HELM_DIR/go.mod" >&2; exit 1; }
HELM_STAMP=$CACHE/.helm-$HELM_VERSION-kube1.$HELM_KUBE_MINOR
if [[ ! -x $BIN/helm || ! -f $HELM_STAMP ]]; then
  log "building helm $HELM_VERSION (default Kubernetes v1.$HELM_KUBE_MINOR)"
  HX="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    HX="$HX -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
  done
  GOBIN=$BIN go install -trimpath -ldflags "-s -w $HX" helm.sh/helm/v3/cmd/helm@$HELM_VERSION
  rm -f "$CACHE"/.helm-*; touch "$HELM_STAMP"
fi

# 3. Gateway API CRDs (standard channel) from the module.
GW_DIR=$(cd "$CACHE" && go mod download -json sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
rm -f "$CACHE/crds/"*.yaml; cp "$GW_DIR"/config/crd/standard/*.yaml "$CACHE/crds/"; chmod u+w "$CACHE/crds/"*.yaml

"$BIN/kube-apiserver" --version
"$BIN/etcd" --version | sed -n 1p   # not `head`: etcd writing its next line after head left is a SIGPIPE (141) under pipefail
"$BIN/helm" version --short
if [[ ! -f $STAMP ]]; then rm -f "$CACHE"/.built-*; touch "$STAMP"; fi
log "done: $(ls "$BIN" | tr '\n' ' ')"
