#!/usr/bin/env bash
# docker-compose only: the apache/kafka image's broker with the native stack's security (deploy/kafka/server.properties:
# SASL/SCRAM-SHA-512, StandardAuthorizer, only `admin` a super user). The image's KAFKA_* variables cannot add the
# admin's SCRAM credential when the storage is formatted, hence this script: render deploy/kafka/server.properties with
# the admin password (a compose secret), format the storage once with --add-scram, start the broker.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true   # bash 5.2: keep '&' literal in ${var//pat/rep}

SRC=/etc/releasegate/kafka                 # deploy/kafka, read-only
CONF=/run/releasegate/kafka                # rendered files (tmpfs, owner-only); the healthcheck reads admin-client.properties
DATA=/var/lib/kafka/data
SECRET=/run/secrets/kafka_admin_password
BROKER_USER=appuser                        # the image's unprivileged user
# The broker listener is bound to every interface of the container so that Docker can forward the port published on
# the host's 127.0.0.1 to it; it stays SASL_PLAINTEXT only because that port is loopback-only (docker-compose.yml).
LISTENERS="listeners=SASL_PLAINTEXT://0.0.0.0:19092,CONTROLLER://127.0.0.1:19093"
# storage formatted before the broker authenticated clients has no admin credential (as in deploy/stack.sh)
SCRAM_MARKER="$DATA/.releasegate-scram-admin"

log() { printf '[kafka-entrypoint] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_broker_user() {   # exec "$@" as the image's unprivileged user, with whichever tool the image has
  if command -v setpriv >/dev/null 2>&1; then
    exec setpriv --reuid="$BROKER_USER" --regid="$BROKER_USER" --init-groups "$@"
  fi
  if command -v su-exec >/dev/null 2>&1; then exec su-exec "$BROKER_USER" "$@"; fi
  exec busybox su -s /bin/bash -c "exec $(printf '%q ' "$@")" "$BROKER_USER"   # Alpine: busybox's su applet
}

# Compose bind-mounts a secret with the host file's owner and mode 0600 (uid/gid/mode are ignored outside Swarm):
# read it as root, give the broker's user its own copy in the tmpfs, and do everything else as that user.
if [[ "$(id -u)" -eq 0 ]]; then
  [[ -s "$SECRET" ]] || die "no admin password in $SECRET: run 'python -m releasegate_runtime.secrets' on the host first"
  mkdir -p "$CONF"
  chown "$BROKER_USER" "$CONF"
  chmod 700 "$CONF"
  (umask 077; cat "$SECRET" > "$CONF/admin.password")
  chown "$BROKER_USER" "$CONF/admin.password"
  export RG_ADMIN_PASSWORD_FILE="$CONF/admin.password"
  as_broker_user bash "${BASH_SOURCE[0]}"
fi

: "${CLUSTER_ID:?set CLUSTER_ID (docker-compose.yml)}"
password_file="${RG_ADMIN_PASSWORD_FILE:-$SECRET}"
[[ -s "$password_file" ]] || die "no admin password in $password_file"
admin_password="$(<"$password_file")"
# it goes unquoted into JAAS options and --add-scram; releasegate_runtime.secrets makes URL-safe tokens
[[ "$admin_password" =~ ^[A-Za-z0-9._~-]+$ ]] || die "the admin password must be URL-safe ([A-Za-z0-9._~-])"

render() {  # render SRC KEY=VALUE...: SRC with each @KEY@ replaced, on stdout
  local content kv
  content="$(<"$1")"
  shift
  for kv in "$@"; do
    content="${content//@${kv%%=*}@/${kv#*=}}"
  done
  printf '%s\n' "$content"
}

umask 077
mkdir -p "$CONF"
render "$SRC/server.properties" "KAFKA_DATA_DIR=$DATA" "ADMIN_PASSWORD=$admin_password" \
  | sed "s|^listeners=.*|$LISTENERS|" > "$CONF/server.properties"
grep -qx "$LISTENERS" "$CONF/server.properties" || die "no listeners= line in $SRC/server.properties to replace"
render "$SRC/compose/admin-client.properties" "ADMIN_PASSWORD=$admin_password" > "$CONF/admin-client.properties"

if [[ -f "$DATA/meta.properties" && ! -f "$SCRAM_MARKER" ]]; then
  log "storage predates SASL/SCRAM; formatting it again (topics are recreated by init_stack)"
  find "$DATA" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
fi
if [[ ! -f "$DATA/meta.properties" ]]; then
  log "formatting storage (cluster id $CLUSTER_ID) with the admin's SCRAM-SHA-512 credential"
  /opt/kafka/bin/kafka-storage.sh format -t "$CLUSTER_ID" -c "$CONF/server.properties" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_password]"
  touch "$SCRAM_MARKER"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$CONF/server.properties"
