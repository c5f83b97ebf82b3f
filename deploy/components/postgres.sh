#!/usr/bin/env bash
# PostgreSQL 15: the primary on 127.0.0.1:15432 and its streaming replica (the shop's standby) on :15433.
# Sourced by deploy/stack.sh after common.sh; defines postgres_{packages,install,up,down,status}.

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
PG_LOGIN_ROLES=(releasegate rg_coordinator rg_gatekeeper rg_dr_checker rg_deployer rg_verifier rg_rollback rg_ops rg_shop rg_api rg_notifier)
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

postgres_packages() { pg_bindir >/dev/null 2>&1 || echo postgresql; }
postgres_install() { :; }   # the Debian package is all it needs
postgres_up() { pg_up; pg_standby_up; }
postgres_down() { pg_standby_down; pg_down; }

postgres_status() {
  local rc=0
  if pg_healthy; then component_line postgres healthy; else component_line postgres down; rc=1; fi
  if pg_standby_healthy; then component_line postgres-standby healthy; else component_line postgres-standby down; rc=1; fi
  return $rc
}
