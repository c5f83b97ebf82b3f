#!/usr/bin/env bash
# A real Kubernetes control plane for releasegate's tests, no Docker: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler (v1.34.4, built by deploy/k8s/build.sh) and kwok (fake node + pod status), all on 127.0.0.1.
#
#   deploy/k8s/cluster.sh up       build if needed; if the cluster is healthy say so and exit 0; otherwise wipe
#                                  .run/k8s, start everything, apply the Gateway API CRDs and releasegate's RBAC,
#                                  write the kubeconfigs, and wait until a test Deployment becomes Available
#   deploy/k8s/cluster.sh down     stop every process of the cluster (state stays until the next `up`)
#   deploy/k8s/cluster.sh status   one line per process + API server readiness; exit 1 if not healthy
#   deploy/k8s/cluster.sh env      `export KUBECONFIG=...` lines (admin; RG_K8S_KUBECONFIG for releasegate, the
#                                  deployer's identity; RG_K8S_ROLLBACK_KUBECONFIG for the rollback service's)
#
# Ports: etcd 2379/2380 (TLS, client certs), kube-apiserver 6443, controller-manager 20257, scheduler 20259.
# State under .run/k8s (gitignored): pki/, etcd/, pids/, logs/, admin.kubeconfig, releasegate.kubeconfig,
# rollback.kubeconfig.
# Shared by everyone on the machine: start/stop it under `flock /tmp/rg-k8s.lock`. docs/kubernetes.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RUN="$ROOT/.run/k8s"
PKI="$RUN/pki"
CACHE="${RG_K8S_CACHE:-$HOME/.cache/releasegate/k8s}"
BIN="$CACHE/bin"
PROC="$ROOT/deploy/proc.sh"
export RG_RUN_DIR="$RUN"   # proc.sh: pids in .run/k8s/pids, logs in .run/k8s/logs (not .run/pids: `make down` stays off)
ENVIRONMENTS="${RG_K8S_ENVIRONMENTS:-staging production}"
SERVICE_CIDR=10.96.0.0/16
API=https://127.0.0.1:6443
NODE=kwok-node-0
PROCS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)   # start order; stopped in reverse
ADMIN="$RUN/admin.kubeconfig"
RG_KUBECONFIG="$RUN/releasegate.kubeconfig"            # ServiceAccount releasegate: the deployer
RG_ROLLBACK_KUBECONFIG="$RUN/rollback.kubeconfig"       # ServiceAccount releasegate-rollback: the rollback service

log() { printf '[k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[k8s] ERROR: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
kc() { "$BIN/kubectl" --kubeconfig "$ADMIN" "$@"; }

tail_log() {
  local f="$RUN/logs/$1.log"
  [[ -f "$f" ]] || return 0
  echo "----- last 30 lines of $f -----" >&2
  tail -n 30 "$f" >&2 || true
}

# wait_for WHAT TIMEOUT_S PROC CHECK...: poll CHECK until it succeeds; fail fast when PROC (a proc.sh name, or -)
# died, and fail with its log tail at the deadline
wait_for() {
  local what="$1" timeout="$2" proc="$3"; shift 3
  local start deadline
  start=$(now_ms); deadline=$(( start + timeout * 1000 ))
  until "$@" >/dev/null 2>&1; do
    if [[ "$proc" != - ]] && ! "$PROC" alive "$proc"; then
      log "$proc exited before $what"; tail_log "$proc"; return 1
    fi
    if (( $(now_ms) >= deadline )); then
      log "$what: not reached after ${timeout}s"; [[ "$proc" == - ]] || tail_log "$proc"; return 1
    fi
    sleep 0.2
  done
  log "$what after $(( $(now_ms) - start ))ms"
}

# ---------------------------------------------------------------------------------------------------------------
# PKI: one self-signed CA; serving certs for etcd and the API server; client certs per component.

ca() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -sha256 -days 3650 -subj "/CN=releasegate-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$PKI/ca.crt" 2>/dev/null
}

# cert NAME SUBJECT EXT_KEY_USAGE [SAN]
cert() {
  local name="$1" subj="$2" eku="$3" san="${4:-}"
  local ext="$PKI/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -z "$san" ]] || echo "subjectAltName=$san"
  } > "$ext"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -sha256 \
    -days 3650 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

make_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  ca
  cert etcd "/CN=etcd" serverAuth,clientAuth "IP:127.0.0.1,DNS:localhost"
  cert apiserver-etcd-client "/CN=kube-apiserver-etcd-client" clientAuth
  cert apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin "/O=system:masters/CN=kubernetes-admin" clientAuth
  cert controller-manager "/CN=system:kube-controller-manager" clientAuth
  cert scheduler "/CN=system:kube-scheduler" clientAuth
  cert kwok "/O=system:masters/CN=kwok-controller" clientAuth   # kwok writes Node/Pod status and Leases
  # service-account token signing key pair
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
}

b64() { base64 -w0 < "$1"; }

# cert_kubeconfig FILE CERT_NAME: a kubeconfig authenticating with PKI/CERT_NAME.{crt,key}
cert_kubeconfig() {
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: releasegate-test
  cluster:
    server: $API
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$PKI/$2.crt")
    client-key-data: $(b64 "$PKI/$2.key")
contexts:
- name: $2@releasegate-test
  context: {cluster: releasegate-test, user: $2}
current-context: $2@releasegate-test
EOF
  chmod 600 "$1"
}

# sa_kubeconfig FILE SERVICE_ACCOUNT: a kubeconfig with a bound token (TokenRequest API, valid one year) of
# releasegate-system/SERVICE_ACCOUNT
sa_kubeconfig() {
  local token
  token="$(kc -n releasegate-system create token "$2" --duration=8760h)"
  [[ -n "$token" ]] || die "no token for ServiceAccount releasegate-system/$2"
  token_kubeconfig "$1" "$2" "$token"
}

token_kubeconfig() {  # FILE USER TOKEN
  cat > "$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: releasegate-test
  cluster:
    server: $API
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $2
  user:
    token: $3
contexts:
- name: $2@releasegate-test
  context: {cluster: releasegate-test, user: $2}
current-context: $2@releasegate-test
EOF
  chmod 600 "$1.tmp"; mv -f "$1.tmp" "$1"
}

# ---------------------------------------------------------------------------------------------------------------
# health checks

etcd_ok() {
  curl -sf --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/apiserver-etcd-client.crt" \
    --key "$PKI/apiserver-etcd-client.key" https://127.0.0.1:2379/health | grep -q '"health":"true"'
}
api_ok() {
  [[ "$(curl -s --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$API/readyz" 2>/dev/null)" == ok ]]
}
# the components' /healthz is always allowed (anonymous) on their secure ports
component_ok() { [[ "$(curl -sk --max-time 2 "https://127.0.0.1:$1/healthz" 2>/dev/null)" == ok ]]; }
node_ready() {
  [[ "$(kc get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

healthy() {
  local p
  for p in "${PROCS[@]}"; do "$PROC" alive "$p" || return 1; done
  [[ -s "$ADMIN" && -s "$RG_KUBECONFIG" && -s "$RG_ROLLBACK_KUBECONFIG" && -f "$RUN/ready" ]] || return 1
  api_ok && component_ok 20257 && component_ok 20259 && node_ready
}

# launch NAME -- CMD...: deploy/proc.sh start, with every inherited descriptor above 2 closed first, so that no
# daemon keeps a lock held by whoever called us (`flock /tmp/rg-k8s.lock cluster.sh up` passes its lock as fd 3)
launch() {
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd="${fd##*/}"
      if (( fd > 2 && fd != 255 )); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    "$PROC" start "$@" >&2
  )
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------------------------------------

start_etcd() {
  launch etcd -- "$BIN/etcd" --name=releasegate-test --data-dir="$RUN/etcd" \
    --listen-client-urls=https://127.0.0.1:2379 --advertise-client-urls=https://127.0.0.1:2379 \
    --listen-peer-urls=https://127.0.0.1:2380 --initial-advertise-peer-urls=https://127.0.0.1:2380 \
    --initial-cluster=releasegate-test=https://127.0.0.1:2380 --initial-cluster-state=new \
    --cert-file="$PKI/etcd.crt" --key-file="$PKI/etcd.key" --trusted-ca-file="$PKI/ca.crt" --client-cert-auth \
    --peer-cert-file="$PKI/etcd.crt" --peer-key-file="$PKI/etcd.key" --peer-trusted-ca-file="$PKI/ca.crt" \
    --peer-client-cert-auth \
    --unsafe-no-fsync --log-level=warn 
}

start_apiserver() {
  launch kube-apiserver -- "$BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=6443 \
    --etcd-servers=https://127.0.0.1:2379 --etcd-cafile="$PKI/ca.crt" \
    --etcd-certfile="$PKI/apiserver-etcd-client.crt" --etcd-keyfile="$PKI/apiserver-etcd-client.key" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --anonymous-auth=false \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=false --profiling=false \
    --service-cluster-ip-range="$SERVICE_CIDR" --endpoint-reconciler-type=none >&2
}

start_controller_manager() {
  launch kube-controller-manager -- "$BIN/kube-controller-manager" \
    --kubeconfig="$RUN/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$RUN/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$RUN/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=20257 --leader-elect=false --profiling=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" >&2
}

start_scheduler() {
  launch kube-scheduler -- "$BIN/kube-scheduler" \
    --kubeconfig="$RUN/scheduler.kubeconfig" \
    --authentication-kubeconfig="$RUN/scheduler.kubeconfig" \
    --authorization-kubeconfig="$RUN/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=20259 --leader-elect=false --profiling=false >&2
}

kwok_config() {
  # kwok's own configuration plus the stages kwokctl uses by default: nodes initialise at once and renew a
  # Lease; pods become Ready as soon as they are bound, complete, and go away when deleted
  local stage="$CACHE/kwok/stage" f
  {
    cat <<'EOF'
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  manageAllNodes: false
  manageNodesWithAnnotationSelector: 'kwok.x-k8s.io/node=fake'
  nodeLeaseDurationSeconds: 40
  nodeLeaseParallelism: 2
  nodePlayStageParallelism: 2
  podPlayStageParallelism: 2
  enablePodsOnNodeSyncStreamWatch: true
  cidr: 10.0.0.0/24
EOF
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      [[ -f "$stage/$f" ]] || die "kwok stage $stage/$f missing (run deploy/k8s/build.sh)"
      echo "---"; cat "$stage/$f"
    done
  } > "$RUN/kwok.yaml"
}

start_kwok() {
  kwok_config
  launch kwok -- "$BIN/kwok" --kubeconfig="$RUN/kwok.kubeconfig" --config="$RUN/kwok.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 --node-ip=127.0.0.1 --node-name="$NODE" >&2
}

rbac() {
  local env
  cat "$HERE/rbac.yaml"
  for env in $ENVIRONMENTS; do
    [[ "$env" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "bad environment name '$env'"
    sed -e "s/@NAMESPACE@/releasegate-$env/g" -e "s/@ENVIRONMENT@/$env/g" "$HERE/role.yaml.in"
  done
}

smoke_test() {
  # a Deployment in a scratch namespace must become Available: scheduler, controller-manager and kwok all work
  kc create namespace rg-k8s-smoke >&2
  wait_for "default ServiceAccount in rg-k8s-smoke" 30 kube-controller-manager \
    kc -n rg-k8s-smoke get serviceaccount default
  kc -n rg-k8s-smoke create deployment smoke --image=registry.invalid/smoke:1 --replicas=2 >&2
  kc -n rg-k8s-smoke wait --for=condition=Available deployment/smoke --timeout=60s >&2 \
    || { kc -n rg-k8s-smoke describe deployment/smoke >&2 || true; tail_log kwok; return 1; }
  kc delete namespace rg-k8s-smoke --wait=false >&2
}

cmd_up() {
  if healthy; then
    log "cluster already healthy ($API); nothing to do"
    return 0
  fi
  bash "$HERE/build.sh" >&2
  local start p port
  start=$(now_ms)
  log "not healthy: stopping what is left and starting from an empty state"
  cmd_down
  for port in 2379 2380 6443 20257 20259; do
    port_free "$port" || die "port $port is in use by a process this clone did not start (another cluster? \
'ss -ltnp' shows it); stop it first"
  done
  rm -rf "$PKI" "$RUN/etcd" "$RUN"/*.kubeconfig "$RUN/kwok.yaml" "$RUN/ready"
  mkdir -p "$RUN/logs" "$RUN/pids"
  make_pki
  cert_kubeconfig "$ADMIN" admin
  cert_kubeconfig "$RUN/controller-manager.kubeconfig" controller-manager
  cert_kubeconfig "$RUN/scheduler.kubeconfig" scheduler
  cert_kubeconfig "$RUN/kwok.kubeconfig" kwok

  start_etcd
  wait_for "etcd healthy" 30 etcd etcd_ok
  start_apiserver
  wait_for "kube-apiserver ready" 60 kube-apiserver api_ok
  start_controller_manager
  start_scheduler
  wait_for "kube-controller-manager healthy" 30 kube-controller-manager component_ok 20257
  wait_for "kube-scheduler healthy" 30 kube-scheduler component_ok 20259
  start_kwok
  kc apply --server-side --field-manager=releasegate-cluster -f "$HERE/kwok-node.yaml" >&2
  wait_for "node $NODE Ready" 30 kwok node_ready

  log "Gateway API CRDs"
  kc apply --server-side --field-manager=releasegate-cluster -f "$CACHE/crds/" >&2
  kc wait --for=condition=Established --timeout=60s crd --all >&2   # (the folder also holds a ValidatingAdmissionPolicy)

  log "releasegate RBAC for environments: $ENVIRONMENTS"
  rbac | kc apply --server-side --field-manager=releasegate-cluster -f - >&2
  sa_kubeconfig "$RG_KUBECONFIG" releasegate
  sa_kubeconfig "$RG_ROLLBACK_KUBECONFIG" releasegate-rollback

  smoke_test
  date -u +%Y-%m-%dT%H:%M:%SZ > "$RUN/ready"
  log "cluster up in $(( $(now_ms) - start ))ms: $API; $(cmd_env | tr '\n' ' ')"
}

cmd_down() {
  local i
  for (( i = ${#PROCS[@]} - 1; i >= 0; i-- )); do
    PROC_STOP_TIMEOUT=15 "$PROC" stop "${PROCS[$i]}" >&2
  done
  rm -f "$RUN/ready"
}

cmd_status() {
  local p ok=0
  for p in "${PROCS[@]}"; do
    if "$PROC" alive "$p"; then printf '%-24s running (pid %s)\n' "$p" "$("$PROC" pid "$p")"
    else printf '%-24s stopped\n' "$p"; ok=1; fi
  done
  if [[ -f "$PKI/ca.crt" ]] && api_ok; then printf '%-24s ready (%s)\n' api "$API"
  else printf '%-24s not ready\n' api; ok=1; fi
  if [[ -s "$ADMIN" ]] && node_ready; then printf '%-24s Ready\n' "node/$NODE"
  else printf '%-24s not Ready\n' "node/$NODE"; ok=1; fi
  return $ok
}

cmd_env() {
  echo "export KUBECONFIG=$ADMIN"
  echo "export RG_K8S_KUBECONFIG=$RG_KUBECONFIG"
  echo "export RG_K8S_ROLLBACK_KUBECONFIG=$RG_ROLLBACK_KUBECONFIG"
  echo "export PATH=$BIN:\$PATH"
}

mkdir -p "$RUN"
case "${1:-}" in
  up) exec 9>"$RUN/.lock"; flock 9; cmd_up ;;
  down) exec 9>"$RUN/.lock"; flock 9; cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: deploy/k8s/cluster.sh up|down|status|env" >&2; exit 2 ;;
esac
