#!/usr/bin/env bash
# A normal client's latency while silent sockets flood the listener (issue 21, item 1): a
# `bldst server` on a fresh SQLite file with its default limits (1,024 connections), then
# bench/silent_sockets.py without a flood and with SILENT silent sockets opened in a loop.
#
#   bash bench/silent-sockets.sh [SILENT] [REQUESTS]     # 2000 and 1000 by default
#
# SERVER_BIN: the server (default: target/release/bldst, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
SILENT=${1:-2000}
REQUESTS=${2:-1000}
if [ -z "${SERVER_BIN:-}" ]; then
    cargo build --release --bin bldst >&2
    SERVER_BIN=target/release/bldst
fi
ulimit -n 8192
work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DATABASE_URL="sqlite://$work/buildstate.db" BUILDSTATE_LISTEN="127.0.0.1:$port"
SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export SECRET_KEY
token=$("$SERVER_BIN" server bootstrap --username bench --email bench@example.com 2>/dev/null)
"$SERVER_BIN" server >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
echo "| silent sockets | requests | p50 ms | p99 ms | max ms | failed | silent sockets opened |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
python3 bench/silent_sockets.py "$port" "$token" 0 "$REQUESTS"
python3 bench/silent_sockets.py "$port" "$token" "$SILENT" "$REQUESTS"
