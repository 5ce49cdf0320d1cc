#!/usr/bin/env bash
# Redis's own side of a rate-limit count: a `redis-server` of its own on a free port under
# `valgrind --tool=callgrind`, N counts sent as the server sends them (bench/redis_count.py),
# instructions per count. Compares the pipeline the server uses with an atomic MULTI version,
# with the Lua script it used first and with a bare PING (a round trip's own cost).
#
#   bash bench/redis-count.sh [N]        # 2000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
echo "| count sent as | Redis instructions per count |"
echo "|---|---:|"
for mode in ${MODES:-pipeline multi script ping}; do
    work=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" \
        redis-server --port "$port" --save '' --appendonly no >"$work/redis.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    python3 bench/redis_count.py "$port" "$mode" 100 # warm-up
    callgrind_control --instr=on "$pid" >/dev/null 2>&1
    python3 bench/redis_count.py "$port" "$mode" "$N"
    callgrind_control --dump "$pid" >/dev/null 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    total=$(awk '/^summary:/ { print $2; exit }' "$work/callgrind.out.1")
    echo "| $mode | $((total / N)) |"
    rm -rf "$work"
done
