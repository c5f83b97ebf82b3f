#!/usr/bin/env bash
# Kafka: one KRaft node from Maven jars (deploy/kafka/pom.xml), SASL/SCRAM, on 127.0.0.1:19092.
# Sourced by deploy/stack.sh after common.sh; defines kafka_{packages,install,up,down,status}.

KAFKA_LIBS="$ROOT/.cache/kafka/libs"
KAFKA_RUN="$RUN_DIR/kafka"
KAFKA_DATA="$KAFKA_RUN/data"
KAFKA_PROPS="$KAFKA_RUN/server.properties"
KAFKA_LOG4J="$KAFKA_RUN/log4j2.yaml"
KAFKA_BOOTSTRAP="127.0.0.1:19092"
KAFKA_TIMEOUT="${KAFKA_TIMEOUT:-90}"

kafka_version() {
  sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/deploy/kafka/pom.xml" | sed -n 1p
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

kafka_packages() {  # apt packages missing for Kafka
  command -v java >/dev/null 2>&1 || echo openjdk-17-jre-headless
  if ! kafka_jars_ok && ! command -v mvn >/dev/null 2>&1; then echo maven; fi
}

kafka_install() {
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
}

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

kafka_status() {
  if kafka_healthy; then component_line kafka healthy; else component_line kafka down; return 1; fi
}
