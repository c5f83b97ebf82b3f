-- The PostgreSQL roles of releasegate: one login role per service, rg_ops for reading, rg_shop for candidate code,
-- rg_shop_owner (no login) owning the shop's schema. Passwords come as psql variables :'pw_<role>' from the
-- per-machine secrets (.run/secrets/postgres/). Run as a superuser by deploy/stack.sh and, under docker-compose, by
-- deploy/postgres/init/00-roles.sh; then databases.sql. What each role may do in the control database: grants.sql.
SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest(ARRAY['releasegate', 'rg_coordinator', 'rg_gatekeeper',
  'rg_dr_checker', 'rg_deployer', 'rg_verifier', 'rg_rollback', 'rg_ops', 'rg_shop', 'rg_api', 'rg_notifier']) AS r
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
ALTER ROLE rg_api LOGIN PASSWORD :'pw_rg_api';
ALTER ROLE rg_notifier LOGIN PASSWORD :'pw_rg_notifier';
-- the shop's schema belongs to rg_shop_owner: the shop's instances (which create their schema at start),
-- migrations (deployer), dumps and drills (dr-checker) and restores (rollback) act as it inside the shop
-- databases only; rg_shop_owner itself cannot connect to the control database
GRANT rg_shop_owner TO releasegate, rg_deployer, rg_rollback, rg_dr_checker, rg_shop;
-- the rollback waits until the shop's sessions are idle before a restore: it must see their state
GRANT pg_read_all_stats TO rg_rollback;
-- the load gate (verifiers/peak_load) reports the shop database's active sessions and lock waits under load
GRANT pg_read_all_stats TO rg_verifier;
