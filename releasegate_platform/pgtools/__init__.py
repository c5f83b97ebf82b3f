"""Shared PostgreSQL tooling of the platform: client tools (pg_dump, pg_restore, psql) run from validated names
with a deadline (`process`, `postgres`), dumps taken and restored inside the backup folder only (`dumps`), and the
catalog's integrity checks (`integrity`). The dr-checker, the rollback service and the CLI use it; none of them
imports another."""
