#!/bin/sh
# As the official image: a bare `redis-server ...` serves the network as user redis.
set -e
if [ "$1" = "redis-server" ]; then
  shift
  exec runuser -u redis -- redis-server --bind 0.0.0.0 --protected-mode no --dir /data "$@"
fi
exec "$@"
