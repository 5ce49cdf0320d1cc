#!/usr/bin/env bash
# The server's own work per report, counted in instructions by callgrind rather than timed:
# the count does not move with whatever else the machine runs, so report shapes (and two
# builds of the server) can be compared on a busy machine, where req/s cannot. It leaves out
# the kernel (fsync, sockets), which costs every shape the same: a shape's extra instructions
# are its extra cost, not its share of the time.
#
#   bash bench/instructions.sh [LAPS] [KIND...]     # 3 laps, plain outputs leased by default
#
# For each KIND: a fresh SQLite file, a release `bldst server` under
# `valgrind --tool=callgrind --instr-atstart=no`, one lap of the cycle (bench/report_cycle.py)
# as a warm-up, then counting on for LAPS laps (61 requests each). SERVER_BIN chooses the
# server (default: target/release/bldst, built if missing). Prints a Markdown table.
#
# BACKEND=postgres: a scratch database per KIND on the PostgreSQL server of POSTGRES_URL
# (default postgres://postgres@127.0.0.1:5432), dropped afterwards, instead of the SQLite file.
# Only the server's own instructions are counted, so a PostgreSQL report counts fewer (the
# database works in its own processes) and a fixed extra cost is a larger share of it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
LAPS=${1:-3}
shift || true
kinds=("$@")
[ "${#kinds[@]}" -gt 0 ] || kinds=(plain outputs leased)
command -v valgrind >/dev/null || { echo "error: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
if [ -z "${SERVER_BIN:-}" ]; then
    cargo build --release --locked --bin bldst >&2
    SERVER_BIN=$repo/target/release/bldst
fi
requests=$((LAPS * 61))
BACKEND=${BACKEND:-sqlite}
POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
case "$BACKEND" in
    sqlite | postgres) ;;
    *) echo "error: BACKEND must be sqlite or postgres, not \`$BACKEND\`" >&2; exit 2 ;;
esac

count() {
    local kind=$1 work port token pid build database
    work=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if [ "$BACKEND" = postgres ]; then
        export PGOPTIONS="-c client_min_messages=warning"
        database="bldst_instructions_$$_$kind"
        psql -q "$POSTGRES_URL/postgres" -c "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database" >&2
        DATABASE_URL="$POSTGRES_URL/$database"
    else
        DATABASE_URL="sqlite://$work/buildstate.db"
    fi
    export DATABASE_URL SECRET_KEY=bench-only-key-of-32-bytes-or-more-000 \
        BUILDSTATE_LISTEN="127.0.0.1:$port" BUILDSTATE_BACKOFF_BASE_SECS=0 BUILDSTATE_MAX_RETRIES=100
    token=$("$SERVER_BIN" server bootstrap --username bench --email bench@example.com 2>/dev/null)
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" \
        "$SERVER_BIN" server >"$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
        sleep 0.2
    done
    build=$(python3 bench/report_cycle.py "$port" "$token" "$kind" 1)
    callgrind_control --instr=on "$pid" >/dev/null 2>&1
    python3 bench/report_cycle.py "$port" "$token" "$kind" "$LAPS" "$build" >/dev/null
    callgrind_control --dump "$pid" >/dev/null 2>&1
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    awk '/^summary:/ { print $2; exit }' "$work/callgrind.out.1"
    rm -rf "$work"
    if [ "$BACKEND" = postgres ]; then
        psql -q "$POSTGRES_URL/postgres" -c "DROP DATABASE $database" >&2
    fi
}

echo "| report ($BACKEND) | instructions per request | vs plain |"
echo "|---|---:|---:|"
plain=
for kind in "${kinds[@]}"; do
    total=$(count "$kind")
    per=$((total / requests))
    [ "$kind" = plain ] && plain=$per
    if [ -n "$plain" ]; then ratio=$(python3 -c "print(f'{$per / $plain:.2f}')"); else ratio="—"; fi
    echo "| $kind | $per | $ratio |"
done
