#!/bin/sh
# Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d):
# the trading ledger gets its own database next to Dagster's (both use an `alembic_version` table).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"${TRADING_LEDGER_DB:-trading_ledger}\" OWNER \"$POSTGRES_USER\""
