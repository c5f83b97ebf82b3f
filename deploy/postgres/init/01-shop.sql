-- docker-compose only: the postgres image creates role `releasegate` and database `releasegate` from
-- POSTGRES_USER / POSTGRES_DB; this adds the shop's database (deploy/stack.sh does the same natively).
CREATE DATABASE shop OWNER releasegate;
CREATE DATABASE shop_staging OWNER releasegate;
