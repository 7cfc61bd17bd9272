# Stand-in for edoburu/pgbouncer, built only where no registry can be reached: Debian
# bookworm's PgBouncer 1.18 (every setting deploy/pgbouncer/pgbouncer.ini uses is older). As in
# that image, docker-compose.yml mounts pgbouncer.ini and userlist.txt under /etc/pgbouncer and
# it runs in the foreground, logging to the container's output, as a user other than root
# (PgBouncer refuses root); pg_isready is there for the healthcheck (postgresql-client).
ARG BASE=pirloop-standin/debian:bookworm
FROM ${BASE}
USER postgres
EXPOSE 5432
CMD ["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"]
