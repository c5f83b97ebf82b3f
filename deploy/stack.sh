#!/usr/bin/env bash
# Local stack without Docker: Kafka (KRaft, from Maven jars), PostgreSQL 15, HAProxy 2.6, payment and ERP sandboxes.
# Ports, paths and contracts: docs/local-stack.md.
#
#   deploy/stack.sh install [--force-pip]   packages, Kafka jars, `pip install -e .[dev]` (idempotent)
#   deploy/stack.sh up                      start whatever is not healthy, wait until healthy (idempotent)
#   deploy/stack.sh down                    stop everything, incl. every process with a pidfile in .run/pids
#   deploy/stack.sh reset                   down + delete .run/
#   deploy/stack.sh status                  one line per component; exit 1 if a component is down
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true   # bash 5.2: keep '&' literal in ${var//pat/rep}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

RUN_DIR="$ROOT/.run"
export RG_RUN_DIR="$RUN_DIR"   # proc.sh uses the same run dir
PID_DIR="$RUN_DIR/pids"
LOG_DIR="$RUN_DIR/logs"
PROC="$ROOT/deploy/proc.sh"
PYTHON="${PYTHON:-python3}"

KAFKA_LIBS="$ROOT/.cache/kafka/libs"
KAFKA_RUN="$RUN_DIR/kafka"
KAFKA_DATA="$KAFKA_RUN/data"
KAFKA_PROPS="$KAFKA_RUN/server.properties"
KAFKA_LOG4J="$KAFKA_RUN/log4j2.yaml"
KAFKA_BOOTSTRAP="127.0.0.1:19092"
KAFKA_TIMEOUT="${KAFKA_TIMEOUT:-90}"
SECRETS_DIR="$RUN_DIR/secrets"   # per-machine secrets (releasegate_runtime/secrets.py), never in the repository

PG_RUN="$RUN_DIR/pg"
PG_DATA="$PG_RUN/data"
PG_SOCK="$PG_RUN/sock"
PG_PORT=15432
PG_LOG="$LOG_DIR/postgres.log"
PG_TIMEOUT="${PG_TIMEOUT:-60}"
# a streaming replica of the whole cluster (the shop's standby; the dr-checker compares its lag with the RPO)
PG_STANDBY_DATA="$PG_RUN/standby"
PG_STANDBY_SOCK="$PG_RUN/standby-sock"
PG_STANDBY_PORT=15433
PG_STANDBY_LOG="$LOG_DIR/postgres-standby.log"

HAPROXY_RUN="$RUN_DIR/haproxy"
HAPROXY_CFG="$HAPROXY_RUN/haproxy.cfg"
HAPROXY_PID="$HAPROXY_RUN/haproxy.pid"
HAPROXY_ADMIN_SOCK="$HAPROXY_RUN/admin.sock"   # the runtime API: owner-only unix socket, no TCP
HAPROXY_CANARY_KEY="$SECRETS_DIR/haproxy/canary.key"   # signs canary cookies (releasegate_runtime/secrets.py)

SANDBOX_PORT=18090
SANDBOX_MODULE_FILE="$ROOT/shop/payment_sandbox.py"

ERP_SANDBOX_PORT=18091
ERP_SANDBOX_MODULE_FILE="$ROOT/shop/erp_sandbox.py"
ERP_SANDBOX_FAIL_RATE="${ERP_SANDBOX_FAIL_RATE:-0.05}"   # transient 503s the shop's ERP exporter must ride out

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
is_root() { [[ "$(id -u)" -eq 0 ]]; }

tail_log() {
  local f="$1" n="${2:-40}"
  if [[ -f "$f" ]]; then
    echo "----- last $n lines of $f -----" >&2
    tail -n "$n" "$f" >&2 || true
    echo "-----" >&2
  else
    echo "(no log file $f)" >&2
  fi
}

# wait_until NAME TIMEOUT_S LOGFILE CHECK_FN [ALIVE_FN]: poll CHECK_FN until it succeeds or the deadline
# passes; fail fast when ALIVE_FN says the process died. On failure print the tail of LOGFILE.
wait_until() {
  local name="$1" timeout="$2" logfile="$3" check="$4" alive="${5:-}"
  local deadline=$(( $(now_ms) + timeout * 1000 )) start
  start=$(now_ms)
  while :; do
    if "$check"; then
      log "$name healthy after $(( ($(now_ms) - start) ))ms"
      return 0
    fi
    if [[ -n "$alive" ]] && ! "$alive"; then
      log "$name: process exited before becoming healthy"
      tail_log "$logfile"
      return 1
    fi
    if (( $(now_ms) >= deadline )); then
      log "$name: not healthy after ${timeout}s"
      tail_log "$logfile"
      return 1
    fi
    sleep 0.25
  done
}

pg_bindir() {
  if [[ -n "${PGBIN:-}" ]]; then echo "$PGBIN"; return 0; fi
  if [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then echo /usr/lib/postgresql/15/bin; return 0; fi
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$d" && -x "$d/initdb" ]]; then echo "$d"; return 0; fi
  if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then pg_config --bindir; return 0; fi
  return 1
}

# run a postgres binary as a non-root user (the Debian `postgres` user) when we are root
as_pg() {
  if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

kafka_version() {
  sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/deploy/kafka/pom.xml" | head -n 1
}

kafka_jars_ok() {
  local v
  v="$(kafka_version)"
  [[ -f "$KAFKA_LIBS/kafka_2.13-$v.jar" ]] \
    && compgen -G "$KAFKA_LIBS/log4j-core-*.jar" >/dev/null \
    && compgen -G "$KAFKA_LIBS/log4j-slf4j2-impl-*.jar" >/dev/null \
    && compgen -G "$KAFKA_LIBS/slf4j-api-2.*.jar" >/dev/null \
    && ! compgen -G "$KAFKA_LIBS/slf4j-api-1.*.jar" >/dev/null
}

# installed, and installed from this checkout (an editable install of another clone would run that clone's code)
releasegate_installed() {
  local where
  where="$(cd / && "$PYTHON" -c 'import contracts, os; print(os.path.dirname(os.path.dirname(contracts.__file__)))' 2>/dev/null)" || return 1
  [[ "$(realpath "$where")" == "$(realpath "$ROOT")" ]]
}

# The interpreter candidate code runs with: the deployer starts candidates as the unprivileged user
# rg-candidate, which cannot read the developer's own Python (e.g. pyenv under /root). A root-owned,
# world-readable virtualenv from Debian's python3 with the shop runtime's libraries; the deployer puts it first
# on the candidates' PATH (RG_CANDIDATE_PATH, deploy/services.sh).
CANDIDATE_RUNTIME="${RG_CANDIDATE_RUNTIME:-/opt/releasegate/candidate-runtime}"
CANDIDATE_PACKAGES=("aiohttp==3.*" "aiokafka>=0.12,<0.15" "asyncpg>=0.29" "prometheus-client>=0.20")
candidate_runtime_install() {
  is_root || { log "not root: candidates run as this user, with this user's python"; return 0; }
  if [[ -x "$CANDIDATE_RUNTIME/bin/python" ]] && "$CANDIDATE_RUNTIME/bin/python" -c 'import aiohttp, aiokafka, asyncpg, prometheus_client' 2>/dev/null; then
    log "candidate runtime present in $CANDIDATE_RUNTIME"
    return 0
  fi
  [[ -x /usr/bin/python3 ]] || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-venv; }
  log "candidate runtime: virtualenv in $CANDIDATE_RUNTIME"
  rm -rf "$CANDIDATE_RUNTIME"
  mkdir -p "$(dirname "$CANDIDATE_RUNTIME")"
  /usr/bin/python3 -m venv "$CANDIDATE_RUNTIME"
  "$CANDIDATE_RUNTIME/bin/pip" install -q "${CANDIDATE_PACKAGES[@]}" || { sleep 5; "$CANDIDATE_RUNTIME/bin/pip" install -q "${CANDIDATE_PACKAGES[@]}"; }
  chmod -R go+rX "$CANDIDATE_RUNTIME" "$(dirname "$CANDIDATE_RUNTIME")"
}

# ----------------------------------------------------------------------------------------------- install
cmd_install() {
  local force_pip=0
  for a in "$@"; do
    case "$a" in
      --force-pip) force_pip=1 ;;
      *) die "install: unknown option $a" ;;
    esac
  done

  local -a pkgs=()
  pg_bindir >/dev/null 2>&1 || pkgs+=(postgresql)
  command -v haproxy >/dev/null 2>&1 || pkgs+=(haproxy)
  command -v prometheus >/dev/null 2>&1 || pkgs+=(prometheus)
  command -v java >/dev/null 2>&1 || pkgs+=(openjdk-17-jre-headless)
  if ! kafka_jars_ok && ! command -v mvn >/dev/null 2>&1; then pkgs+=(maven); fi
  if [[ ${#pkgs[@]} -gt 0 ]]; then
    is_root || die "missing packages (${pkgs[*]}); run 'deploy/stack.sh install' as root or install them"
    log "apt-get install ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"
  else
    log "system packages present (postgresql, haproxy, java)"
  fi

  if kafka_jars_ok; then
    log "Kafka $(kafka_version) jars present in .cache/kafka/libs"
  else
    log "fetching Kafka $(kafka_version) jars into .cache/kafka/libs"
    local tmp="$KAFKA_LIBS.tmp.$$"
    rm -rf "$tmp"
    mvn -q -B -Dstyle.color=never -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" -DincludeScope=runtime >&2
    # replace the whole folder: stale jars (e.g. an slf4j 1.x api) must not stay on the classpath
    rm -rf "$KAFKA_LIBS"
    mkdir -p "$(dirname "$KAFKA_LIBS")"
    mv "$tmp" "$KAFKA_LIBS"
    kafka_jars_ok || die "Kafka jars incomplete after mvn copy-dependencies"
  fi

  candidate_runtime_install

  if [[ $force_pip -eq 1 ]] || ! releasegate_installed; then
    log "pip install -e '.[dev]'"
    # one retry: a transient index or metadata error must not fail a fresh machine's first run
    "$PYTHON" -m pip install -q -e "$ROOT[dev]" || { log "pip failed; retrying once"; sleep 5;
      "$PYTHON" -m pip install -q -e "$ROOT[dev]"; }
  else
    log "releasegate already installed (use --force-pip to reinstall)"
  fi
}

# ----------------------------------------------------------------------------------------------- kafka
kafka_alive() { "$PROC" alive kafka; }

kafka_healthy() {
  [[ -s "$SECRETS_DIR/kafka/admin.password" ]] || return 1
  "$PYTHON" - "$KAFKA_BOOTSTRAP" "$SECRETS_DIR/kafka/admin.password" <<'PY' >/dev/null 2>&1
import asyncio, sys
from aiokafka.client import AIOKafkaClient

async def main(bootstrap, password_file):
    password = open(password_file).read().strip()
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000,
                            connections_max_idle_ms=10000, metadata_max_age_ms=3000,
                            security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                            sasl_plain_username="admin", sasl_plain_password=password)
    try:
        await asyncio.wait_for(client.bootstrap(), 5)
        md = await asyncio.wait_for(client.fetch_all_metadata(), 5)
        brokers = md.brokers()
        # our broker (node 1) is registered and a controller is known: the KRaft node is serving
        ok = any(b.nodeId == 1 for b in brokers) and md.controller is not None
        return 0 if ok else 1
    finally:
        await client.close()

try:
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
except Exception:
    sys.exit(1)
PY
}

render() {  # render SRC DST KEY=VALUE...
  local src="$1" dst="$2"; shift 2
  local content kv
  content="$(cat "$src")"
  for kv in "$@"; do
    content="${content//@${kv%%=*}@/${kv#*=}}"
  done
  printf '%s\n' "$content" > "$dst.tmp"
  mv -f "$dst.tmp" "$dst"
}

kafka_up() {
  if kafka_healthy; then
    if kafka_alive; then log "kafka: already healthy"; else log "kafka: something healthy answers on $KAFKA_BOOTSTRAP (not started by this stack)"; fi
    return 0
  fi
  kafka_jars_ok || die "Kafka jars missing in .cache/kafka/libs: run deploy/stack.sh install"
  mkdir -p "$KAFKA_RUN" "$KAFKA_DATA" "$LOG_DIR" "$PID_DIR"
  chmod 700 "$KAFKA_RUN"
  local admin_password
  admin_password="$(cat "$SECRETS_DIR/kafka/admin.password")"
  (umask 077; render "$ROOT/deploy/kafka/server.properties" "$KAFKA_PROPS" "KAFKA_DATA_DIR=$KAFKA_DATA" \
    "ADMIN_PASSWORD=$admin_password")
  # storage formatted before the broker authenticated clients has no admin credential: format it again
  if [[ -f "$KAFKA_DATA/meta.properties" && ! -f "$KAFKA_RUN/scram-admin" ]] && ! kafka_alive; then
    log "kafka: storage predates SASL/SCRAM; formatting it again (topics are recreated by init_stack)"
    rm -rf "$KAFKA_DATA"; mkdir -p "$KAFKA_DATA"
  fi
  render "$ROOT/deploy/kafka/log4j2.yaml" "$KAFKA_LOG4J" "KAFKA_LOG_FILE=$LOG_DIR/kafka.log"
  local cp="$KAFKA_LIBS/*"
  if ! kafka_alive; then
    if [[ ! -f "$KAFKA_DATA/meta.properties" ]]; then
      local uuid
      if [[ -s "$KAFKA_RUN/cluster.id" ]]; then
        uuid="$(cat "$KAFKA_RUN/cluster.id")"
      else
        uuid="$(java -cp "$cp" -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.console.level=OFF \
          kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/kafka-storage.log" | tail -n 1 | tr -d '[:space:]')"
        [[ -n "$uuid" ]] || { tail_log "$LOG_DIR/kafka-storage.log"; die "kafka: StorageTool random-uuid failed"; }
        echo "$uuid" > "$KAFKA_RUN/cluster.id"
      fi
      log "kafka: formatting storage (cluster id $uuid)"
      if ! java -cp "$cp" -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.console.level=OFF \
          kafka.tools.StorageTool format -t "$uuid" -c "$KAFKA_PROPS" \
          --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_password]" >>"$LOG_DIR/kafka-storage.log" 2>&1; then
        tail_log "$LOG_DIR/kafka-storage.log"
        die "kafka: storage format failed"
      fi
      touch "$KAFKA_RUN/scram-admin"
    fi
    log "kafka: starting"
    "$PROC" start kafka -- java -Xmx512m -Xms256m -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.console.level=OFF \
      -cp "$cp" kafka.Kafka "$KAFKA_PROPS" >&2
  else
    log "kafka: process alive (pid $("$PROC" pid kafka)), waiting for it to serve"
  fi
  wait_until kafka "$KAFKA_TIMEOUT" "$LOG_DIR/kafka.log" kafka_healthy kafka_alive
}

kafka_down() {
  # controlled shutdown of a single KRaft node takes a few seconds; give it up to 30s before KILL
  "$PROC" stop -t 30 kafka >&2
}

# ----------------------------------------------------------------------------------------------- postgres
pg_healthy() {
  local bin
  bin="$(pg_bindir)" || return 1
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 >/dev/null 2>&1
}

pg_running() {
  local bin
  bin="$(pg_bindir)" || return 1
  [[ -f "$PG_DATA/PG_VERSION" ]] || return 1
  as_pg "$bin/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

pg_psql() {  # psql as the cluster superuser over the unix socket
  local bin
  bin="$(pg_bindir)"
  as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres "$@"
}

# Roles (one per service, passwords per machine from .run/secrets/postgres/) and databases; what each role may do
# in the control database is deploy/postgres/grants.sql, applied by init_stack as the owner.
PG_LOGIN_ROLES=(releasegate rg_coordinator rg_gatekeeper rg_dr_checker rg_deployer rg_verifier rg_rollback rg_ops rg_shop)
pg_bootstrap_sql() {
  local -a vars=()
  local r
  for r in "${PG_LOGIN_ROLES[@]}"; do
    vars+=(-v "pw_$r=$(cat "$SECRETS_DIR/postgres/$r.password")")
  done
  pg_psql "${vars[@]}" -f "$ROOT/deploy/postgres/roles.sql"
  pg_psql -f "$ROOT/deploy/postgres/databases.sql"
}

pg_up() {
  local bin
  bin="$(pg_bindir)" || die "PostgreSQL binaries not found: run deploy/stack.sh install"
  if pg_running && pg_healthy; then
    log "postgres: already healthy"
    pg_bootstrap_sql
    return 0
  fi
  if pg_running; then
    log "postgres: running but not accepting connections yet, waiting"
    wait_until postgres "$PG_TIMEOUT" "$PG_LOG" pg_healthy pg_running || die "postgres: not healthy"
    pg_bootstrap_sql
    return 0
  fi
  if pg_healthy; then
    die "postgres: something else already listens on 127.0.0.1:$PG_PORT"
  fi
  mkdir -p "$PG_RUN" "$PG_SOCK" "$LOG_DIR"
  touch "$PG_LOG"
  if is_root; then
    id postgres >/dev/null 2>&1 || die "postgres: OS user 'postgres' missing (install the postgresql package)"
    chown postgres: "$PG_RUN" "$PG_SOCK" "$PG_LOG"
    [[ -d "$PG_DATA" ]] && chown -R postgres: "$PG_DATA"
    runuser -u postgres -- test -w "$PG_RUN" \
      || die "postgres: user 'postgres' cannot reach $PG_RUN (a parent directory is not traversable)"
  fi
  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    log "postgres: initdb $PG_DATA"
    rm -rf "$PG_DATA"
    as_pg mkdir -p "$PG_DATA"
    chmod 700 "$PG_DATA"
    if ! as_pg "$bin/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >>"$PG_LOG" 2>&1; then
      tail_log "$PG_LOG"
      die "postgres: initdb failed"
    fi
    as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null <<EOF

# ---- releasegate local stack (deploy/stack.sh) ----
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
# tests: don't wait for the WAL flush on commit; fsync stays ON (backup / DR work needs real durability)
synchronous_commit = off
fsync = on
full_page_writes = on
wal_level = replica
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  fi
  log "postgres: starting"
  if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$PG_TIMEOUT" start >/dev/null 2>&1; then
    tail_log "$PG_LOG"
    die "postgres: pg_ctl start failed"
  fi
  wait_until postgres "$PG_TIMEOUT" "$PG_LOG" pg_healthy pg_running || die "postgres: not healthy"
  pg_bootstrap_sql
}

pg_down() {
  local bin
  bin="$(pg_bindir)" || return 0
  if pg_running; then
    log "postgres: stopping (fast)"
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 \
      || as_pg "$bin/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
}

pg_standby_healthy() {
  local bin
  bin="$(pg_bindir)" || return 1
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_STANDBY_PORT" -t 2 >/dev/null 2>&1
}

pg_standby_running() {
  local bin
  bin="$(pg_bindir)" || return 1
  [[ -f "$PG_STANDBY_DATA/PG_VERSION" ]] || return 1
  as_pg "$bin/pg_ctl" status -D "$PG_STANDBY_DATA" >/dev/null 2>&1
}

pg_standby_up() {
  local bin
  bin="$(pg_bindir)" || die "PostgreSQL binaries not found: run deploy/stack.sh install"
  if pg_standby_running && pg_standby_healthy; then
    log "postgres-standby: already healthy"
    return 0
  fi
  mkdir -p "$PG_STANDBY_SOCK"
  touch "$PG_STANDBY_LOG"
  if is_root; then chown postgres: "$PG_STANDBY_SOCK" "$PG_STANDBY_LOG"; fi
  if [[ ! -f "$PG_STANDBY_DATA/standby.signal" ]]; then
    log "postgres-standby: pg_basebackup of the primary into $PG_STANDBY_DATA"
    rm -rf "$PG_STANDBY_DATA"
    if ! as_pg "$bin/pg_basebackup" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -D "$PG_STANDBY_DATA" \
        --write-recovery-conf --wal-method=stream --checkpoint=fast >>"$PG_STANDBY_LOG" 2>&1; then
      tail_log "$PG_STANDBY_LOG"
      die "postgres-standby: pg_basebackup failed"
    fi
    printf '\n# ---- releasegate local stack: the standby (deploy/stack.sh) ----\nport = %s\nunix_socket_directories = '"'"'%s'"'"'\nhot_standby = on\n' \
      "$PG_STANDBY_PORT" "$PG_STANDBY_SOCK" | as_pg tee -a "$PG_STANDBY_DATA/postgresql.conf" >/dev/null
  fi
  log "postgres-standby: starting"
  if ! as_pg "$bin/pg_ctl" -D "$PG_STANDBY_DATA" -l "$PG_STANDBY_LOG" -w -t "$PG_TIMEOUT" start >/dev/null 2>&1; then
    tail_log "$PG_STANDBY_LOG"
    die "postgres-standby: pg_ctl start failed"
  fi
  wait_until postgres-standby "$PG_TIMEOUT" "$PG_STANDBY_LOG" pg_standby_healthy pg_standby_running \
    || die "postgres-standby: not healthy"
}

pg_standby_down() {
  local bin
  bin="$(pg_bindir)" || return 0
  if pg_standby_running; then
    log "postgres-standby: stopping (fast)"
    as_pg "$bin/pg_ctl" -D "$PG_STANDBY_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 \
      || as_pg "$bin/pg_ctl" -D "$PG_STANDBY_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
}

# ----------------------------------------------------------------------------------------------- haproxy
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

# ----------------------------------------------------------------------------------------------- prometheus
PROM_RUN="$RUN_DIR/prometheus"
PROM_ADDR="127.0.0.1:19090"
prom_healthy() { curl -fsS "http://$PROM_ADDR/-/ready" >/dev/null 2>&1; }
prom_alive() { "$PROC" alive prometheus; }

prom_up() {
  if prom_healthy; then log "prometheus: already healthy"; return 0; fi
  command -v prometheus >/dev/null 2>&1 || die "prometheus not installed: run deploy/stack.sh install"
  if prom_alive; then "$PROC" stop prometheus >&2; fi
  # scrape targets of shop instances are files the deployer writes here (file_sd)
  mkdir -p "$PROM_RUN/data" "$PROM_RUN/targets" "$LOG_DIR"
  render "$ROOT/deploy/prometheus/prometheus.native.yml" "$PROM_RUN/prometheus.yml" "PROM_RUN_DIR=$PROM_RUN"
  "$PROC" start prometheus -- prometheus --config.file="$PROM_RUN/prometheus.yml" \
    --storage.tsdb.path="$PROM_RUN/data" --storage.tsdb.retention.time=6h \
    --web.listen-address="$PROM_ADDR" >&2
  wait_until prometheus 60 "$LOG_DIR/prometheus.log" prom_healthy prom_alive || die "prometheus: not healthy"
}

# ----------------------------------------------------------------------------------------------- payment sandbox
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

# ----------------------------------------------------------------------------------------------- ERP sandbox
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

# ----------------------------------------------------------------------------------------------- commands
cmd_up() {
  mkdir -p "$RUN_DIR" "$PID_DIR" "$LOG_DIR"
  "$PYTHON" -m releasegate_runtime.secrets --dir "$SECRETS_DIR" >&2
  pg_up
  pg_standby_up
  kafka_up || die "kafka: not healthy"
  haproxy_up
  prom_up
  sandbox_up
  erp_sandbox_up
  log "stack is up"
}

cmd_down() {
  haproxy_down
  # services and shop instances started by others (pidfiles in .run/pids), in parallel, before the
  # infrastructure they depend on
  local -a others=()
  local n
  while IFS= read -r n; do
    [[ -n "$n" && "$n" != kafka && "$n" != payment-sandbox && "$n" != erp-sandbox ]] && others+=("$n")
  done < <("$PROC" list)
  if [[ ${#others[@]} -gt 0 ]]; then "$PROC" stop "${others[@]}" >&2; fi
  "$PROC" stop payment-sandbox erp-sandbox >&2
  kafka_down
  pg_standby_down
  pg_down
  # anything that appeared meanwhile
  others=()
  while IFS= read -r n; do [[ -n "$n" ]] && others+=("$n"); done < <("$PROC" list)
  if [[ ${#others[@]} -gt 0 ]]; then "$PROC" stop "${others[@]}" >&2; fi
  log "stack is down"
}

cmd_reset() {
  cmd_down
  log "deleting $RUN_DIR"
  rm -rf "$RUN_DIR"
}

cmd_status() {
  local rc=0
  line() { printf '%-16s %s\n' "$1" "$2"; }
  if kafka_healthy; then line kafka healthy; else line kafka down; rc=1; fi
  if pg_healthy; then line postgres healthy; else line postgres down; rc=1; fi
  if pg_standby_healthy; then line postgres-standby healthy; else line postgres-standby down; rc=1; fi
  if haproxy_alive && haproxy_healthy; then line haproxy healthy; else line haproxy down; rc=1; fi
  if prom_healthy; then line prometheus healthy; else line prometheus down; rc=1; fi
  if [[ -f "$SANDBOX_MODULE_FILE" ]]; then
    if sandbox_healthy; then line payment-sandbox healthy; else line payment-sandbox down; rc=1; fi
  else
    line payment-sandbox "down (shop/payment_sandbox.py absent)"
  fi
  if [[ -f "$ERP_SANDBOX_MODULE_FILE" ]]; then
    if erp_sandbox_healthy; then line erp-sandbox healthy; else line erp-sandbox down; rc=1; fi
  else
    line erp-sandbox "down (shop/erp_sandbox.py absent)"
  fi
  return $rc
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  up)      cmd_up ;;
  down)    cmd_down ;;
  reset)   cmd_reset ;;
  status)  cmd_status ;;
  *) echo "usage: deploy/stack.sh install [--force-pip] | up | down | reset | status" >&2; exit 2 ;;
esac
