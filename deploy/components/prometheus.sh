#!/usr/bin/env bash
# Prometheus on 127.0.0.1:19090, scraping the shop instances the deployer lists (file_sd) and releasegate's own
# services (their health ports), with the alerting rules of deploy/prometheus/rules.yml.
# Sourced by deploy/stack.sh after common.sh; defines prometheus_{packages,install,up,down,status}.

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
  # releasegate's own processes: the targets a start of the services writes, here those of RG_INSTANCES already
  # (scraped and `down` until they start, as the alerting rules expect)
  bash "$ROOT/deploy/services.sh" targets "$PROM_RUN/targets-releasegate"
  render "$ROOT/deploy/prometheus/prometheus.native.yml" "$PROM_RUN/prometheus.yml" "PROM_RUN_DIR=$PROM_RUN" \
    "ROOT_DIR=$ROOT"
  "$PROC" start prometheus -- prometheus --config.file="$PROM_RUN/prometheus.yml" \
    --storage.tsdb.path="$PROM_RUN/data" --storage.tsdb.retention.time=6h \
    --web.listen-address="$PROM_ADDR" >&2
  wait_until prometheus 60 "$LOG_DIR/prometheus.log" prom_healthy prom_alive || die "prometheus: not healthy"
}

prometheus_packages() { command -v prometheus >/dev/null 2>&1 || echo prometheus; }
prometheus_install() { :; }
prometheus_up() { prom_up; }
prometheus_down() { "$PROC" stop prometheus >&2; }

prometheus_status() {
  if prom_healthy; then component_line prometheus healthy; else component_line prometheus down; return 1; fi
}
