#!/usr/bin/env bash
# Makes sure the local services the tests use are up, starting any that is down.
# PostgreSQL backs the PostgreSQL half of the suite; Redis is part of this machine's kit and is
# checked so a broken machine is noticed early (buildstate itself does not use it).
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }

if ! pg_up; then
    echo "PostgreSQL is down: starting it" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    pg_up || { echo "error: PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
fi

if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "Redis is down: starting it" >&2
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
