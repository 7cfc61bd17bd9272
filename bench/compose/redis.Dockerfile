# Stand-in for redis:7 (Debian bookworm's Redis 7.0): like the official image it listens on
# every interface without protected mode and keeps its files in /data.
ARG BASE=pirloop-standin/debian:bookworm
FROM ${BASE}
RUN mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
