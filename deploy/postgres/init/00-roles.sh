#!/usr/bin/env bash
# docker-compose only: deploy/postgres/roles.sql (mounted at /etc/releasegate/postgres) with the per-machine
# passwords of .run/secrets/postgres (docker-compose.yml's entrypoint copies them for the postgres user into
# RG_PG_PASSWORDS). The databases and the rest: 01-databases.sh.
# Executed or sourced by the image's entrypoint (set -Eeo pipefail, as it has), hence the one function.
set -Eeo pipefail

rg_create_roles() {
  local dir="${RG_PG_PASSWORDS:-/run/releasegate/postgres}" role
  local -a vars=()
  for role in releasegate rg_coordinator rg_gatekeeper rg_dr_checker rg_deployer rg_verifier rg_rollback rg_ops \
      rg_shop rg_api rg_notifier; do
    if [[ ! -s "$dir/$role.password" ]]; then
      echo "00-roles.sh: no $dir/$role.password: run 'python -m releasegate_runtime.secrets' on the host" >&2
      return 1
    fi
    vars+=(-v "pw_$role=$(<"$dir/$role.password")")
  done
  PGHOST='' PGHOSTADDR='' psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password \
    --dbname "$POSTGRES_DB" "${vars[@]}" -f /etc/releasegate/postgres/roles.sql
}

rg_create_roles
