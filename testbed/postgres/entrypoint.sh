#!/bin/sh
# PostgreSQL for the test bed (testbed/dbimages.py), run as the unprivileged postgres user.
# First start (no PG_VERSION in PGDATA, a volume): initdb with POSTGRES_USER as superuser and
# POSTGRES_PASSWORD fed on stdin (never on a command line or in a file), create POSTGRES_DB,
# listen on every address. Then run the command (the server) in the foreground.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
for name in "$POSTGRES_USER" "$POSTGRES_DB"; do
    case "$name" in
        "" | [!A-Za-z_]* | *[!A-Za-z0-9_]*)
            echo "postgres-entrypoint: invalid name '$name' (use [A-Za-z_][A-Za-z0-9_]*)" >&2
            exit 2 ;;
    esac
done
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres-entrypoint: POSTGRES_PASSWORD is required for the first start" >&2
        exit 2
    fi
    printf '%s\n' "$POSTGRES_PASSWORD" | initdb --pgdata="$PGDATA" \
        --username="$POSTGRES_USER" --pwfile=/dev/stdin \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        # Single-user mode: no server is listening yet, so the healthcheck stays false.
        echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\"" |
            postgres --single -D "$PGDATA" postgres >/dev/null
    fi
    echo "postgres-entrypoint: initialised $PGDATA (database $POSTGRES_DB)"
fi
exec "$@"
