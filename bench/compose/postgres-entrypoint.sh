#!/bin/sh
# The official postgres image's first-start behaviour, for the stand-in image.
set -e
if [ "$1" = "postgres" ]; then
  mkdir -p "$PGDATA" /run/postgresql
  chown -R postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > "$pwfile"
    chown postgres "$pwfile"
    runuser -u postgres -- initdb -D "$PGDATA" --username="${POSTGRES_USER:-postgres}" \
      --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    runuser -u postgres -- pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    db="${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"
    if [ "$db" != "postgres" ]; then
      runuser -u postgres -- psql -v ON_ERROR_STOP=1 --username="${POSTGRES_USER:-postgres}" \
        --dbname=postgres -c "CREATE DATABASE \"$db\""
    fi
    runuser -u postgres -- pg_ctl -D "$PGDATA" -m fast -w stop
  fi
  shift
  exec runuser -u postgres -- postgres -c listen_addresses='*' "$@"
fi
exec "$@"
