-- Contract: carts.status goes away. Only safe once no release in production reads it.
SET lock_timeout = '2s';
ALTER TABLE carts DROP COLUMN status;
