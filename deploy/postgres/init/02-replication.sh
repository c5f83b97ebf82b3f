#!/bin/sh
# docker-compose only: let the postgres-standby container stream WAL from this primary.
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
