#!/usr/bin/env bash
# Makes sure the local services the tests use are up, starting any that is down.
# PostgreSQL backs the PostgreSQL half of the suite. The rate-limit tests start redis-server
# processes of their own (tests/support/redis.rs), so the binary is installed if missing; the
# machine's Redis on 6379 is only checked, so a broken machine is noticed early.
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }

if ! pg_up; then
    echo "PostgreSQL is down: starting it" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    pg_up || { echo "error: PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
fi

if ! command -v redis-server >/dev/null && command -v apt-get >/dev/null; then
    echo "redis-server is missing: installing it" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null
fi
command -v redis-server >/dev/null || { echo "error: redis-server is needed by the rate-limit tests" >&2; exit 1; }

if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "Redis is down: starting it" >&2
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
