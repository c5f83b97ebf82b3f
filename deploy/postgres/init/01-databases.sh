#!/usr/bin/env bash
# docker-compose only: deploy/postgres/databases.sql after the roles (00-roles.sh). The image creates database
# `releasegate` (POSTGRES_DB, owned by POSTGRES_USER) before the init scripts run.
set -Eeo pipefail

PGHOST='' PGHOSTADDR='' psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password \
  --dbname "$POSTGRES_DB" -f /etc/releasegate/postgres/databases.sql
