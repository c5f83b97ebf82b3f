-- The databases after roles.sql: the shop's owned by rg_shop_owner, who may connect where, and what verifiers may
-- read in the shop databases. Run as a superuser (deploy/stack.sh) or as the image's bootstrap user `releasegate`
-- (docker-compose, deploy/postgres/init/01-databases.sh); idempotent.
SELECT 'CREATE DATABASE releasegate OWNER releasegate'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'releasegate') \gexec
SELECT 'CREATE DATABASE shop OWNER rg_shop_owner'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'shop') \gexec
SELECT 'CREATE DATABASE shop_staging OWNER rg_shop_owner'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'shop_staging') \gexec
ALTER DATABASE shop OWNER TO rg_shop_owner;
ALTER DATABASE shop_staging OWNER TO rg_shop_owner;
-- who may connect where: candidates (rg_shop) never reach the control database
REVOKE CONNECT, TEMPORARY ON DATABASE releasegate FROM PUBLIC;
GRANT CONNECT ON DATABASE releasegate TO rg_coordinator, rg_gatekeeper, rg_dr_checker, rg_deployer, rg_verifier,
  rg_rollback, rg_ops, rg_api, rg_notifier;
REVOKE CONNECT, TEMPORARY ON DATABASE shop, shop_staging FROM PUBLIC;
GRANT CONNECT ON DATABASE shop, shop_staging TO rg_shop, rg_verifier, rg_deployer, rg_rollback, rg_dr_checker;
-- the parity report (gatekeeper, `releasegate parity` as ops) reads each database's version and settings with SHOW:
-- CONNECT is all it needs, no table is granted to them there
GRANT CONNECT ON DATABASE shop, shop_staging TO rg_gatekeeper, rg_ops;
ALTER ROLE releasegate IN DATABASE shop SET role = 'rg_shop_owner';
ALTER ROLE releasegate IN DATABASE shop_staging SET role = 'rg_shop_owner';
ALTER ROLE rg_deployer IN DATABASE shop SET role = 'rg_shop_owner';
ALTER ROLE rg_deployer IN DATABASE shop_staging SET role = 'rg_shop_owner';
ALTER ROLE rg_rollback IN DATABASE shop SET role = 'rg_shop_owner';
ALTER ROLE rg_rollback IN DATABASE shop_staging SET role = 'rg_shop_owner';
ALTER ROLE rg_dr_checker IN DATABASE shop SET role = 'rg_shop_owner';
ALTER ROLE rg_dr_checker IN DATABASE shop_staging SET role = 'rg_shop_owner';
ALTER ROLE rg_shop IN DATABASE shop SET role = 'rg_shop_owner';
ALTER ROLE rg_shop IN DATABASE shop_staging SET role = 'rg_shop_owner';
-- DR tests pause and resume the standby's replay (function rights live per database; replicated to the standby)
\connect shop
-- the image runs this file as `releasegate`, whose role in the shop databases is now rg_shop_owner: act as itself
SET ROLE NONE;
GRANT EXECUTE ON FUNCTION pg_wal_replay_pause() TO releasegate, rg_dr_checker, rg_shop_owner;
GRANT EXECUTE ON FUNCTION pg_wal_replay_resume() TO releasegate, rg_dr_checker, rg_shop_owner;
-- whatever rg_shop_owner creates (the shop, migrations, restores) verifiers may read, and nothing else
ALTER DEFAULT PRIVILEGES FOR ROLE rg_shop_owner GRANT USAGE ON SCHEMAS TO rg_verifier;
ALTER DEFAULT PRIVILEGES FOR ROLE rg_shop_owner GRANT SELECT ON TABLES TO rg_verifier;
ALTER SCHEMA public OWNER TO rg_shop_owner;
GRANT USAGE ON SCHEMA public TO rg_verifier;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO rg_verifier;
\connect shop_staging
SET ROLE NONE;
ALTER DEFAULT PRIVILEGES FOR ROLE rg_shop_owner GRANT USAGE ON SCHEMAS TO rg_verifier;
ALTER DEFAULT PRIVILEGES FOR ROLE rg_shop_owner GRANT SELECT ON TABLES TO rg_verifier;
ALTER SCHEMA public OWNER TO rg_shop_owner;
GRANT USAGE ON SCHEMA public TO rg_verifier;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO rg_verifier;
