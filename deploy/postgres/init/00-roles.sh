#!/usr/bin/env bash
# docker-compose only: the roles of deploy/stack.sh's pg_bootstrap_sql (one login role per service, rg_shop_owner
# owning the shop databases), with the per-machine passwords of .run/secrets/postgres (docker-compose.yml's entrypoint
# copies them for the postgres user into RG_PG_PASSWORDS). The databases and the rest: 01-shop.sql.
# Executed or sourced by the image's entrypoint (set -Eeo pipefail, as it has), hence the one function.
set -Eeo pipefail

rg_create_roles() {
  local dir="${RG_PG_PASSWORDS:-/run/releasegate/postgres}" role
  local -a vars=()
  for role in releasegate rg_coordinator rg_gatekeeper rg_dr_checker rg_deployer rg_verifier rg_rollback rg_ops \
      rg_shop; do
    if [[ ! -s "$dir/$role.password" ]]; then
      echo "00-roles.sh: no $dir/$role.password: run 'python -m services.common.secrets' on the host" >&2
      return 1
    fi
    vars+=(-v "pw_$role=$(<"$dir/$role.password")")
  done
  PGHOST='' PGHOSTADDR='' psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password \
    --dbname "$POSTGRES_DB" "${vars[@]}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest(ARRAY['releasegate', 'rg_coordinator', 'rg_gatekeeper',
  'rg_dr_checker', 'rg_deployer', 'rg_verifier', 'rg_rollback', 'rg_ops', 'rg_shop']) AS r
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
SELECT 'CREATE ROLE rg_shop_owner NOLOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rg_shop_owner') \gexec
ALTER ROLE releasegate LOGIN CREATEDB PASSWORD :'pw_releasegate';
ALTER ROLE rg_coordinator LOGIN PASSWORD :'pw_rg_coordinator';
ALTER ROLE rg_gatekeeper LOGIN PASSWORD :'pw_rg_gatekeeper';
-- restore drills create and drop a scratch database of their own
ALTER ROLE rg_dr_checker LOGIN CREATEDB PASSWORD :'pw_rg_dr_checker';
ALTER ROLE rg_deployer LOGIN PASSWORD :'pw_rg_deployer';
ALTER ROLE rg_verifier LOGIN PASSWORD :'pw_rg_verifier';
ALTER ROLE rg_rollback LOGIN PASSWORD :'pw_rg_rollback';
ALTER ROLE rg_ops LOGIN PASSWORD :'pw_rg_ops';
ALTER ROLE rg_shop LOGIN PASSWORD :'pw_rg_shop';
-- the shop's schema belongs to rg_shop_owner: the shop's instances (which create their schema at start),
-- migrations (deployer), dumps and drills (dr-checker) and restores (rollback) act as it inside the shop
-- databases only; rg_shop_owner itself cannot connect to the control database
GRANT rg_shop_owner TO releasegate, rg_deployer, rg_rollback, rg_dr_checker, rg_shop;
-- the rollback waits until the shop's sessions are idle before a restore: it must see their state
GRANT pg_read_all_stats TO rg_rollback;
SQL
}

rg_create_roles
