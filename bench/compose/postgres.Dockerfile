# Stand-in for postgres:16 (Debian bookworm ships PostgreSQL 15; pirloop needs nothing newer).
# The entrypoint reproduces what the official image does with POSTGRES_USER, POSTGRES_PASSWORD
# and POSTGRES_DB on an empty data directory: a UTF-8 cluster, that role and database, password
# authentication from the network.
ARG BASE=pirloop-standin/debian:bookworm
FROM ${BASE}
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
RUN mkdir -p "$PGDATA" /run/postgresql && chown -R postgres:postgres /var/lib/postgresql /run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
