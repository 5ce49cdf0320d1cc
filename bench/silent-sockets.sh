#!/usr/bin/env bash
# A normal client's latency while silent sockets flood the listener (issue 21, item 1): a
# `bldst server` on a fresh SQLite file with its default limits (1,024 connections), then
# bench/silent_sockets.py without a flood and with SILENT silent sockets opened in a loop.
#
#   bash bench/silent-sockets.sh [SILENT] [REQUESTS]     # 2000 and 1000 by default
#
# SERVER_BIN chooses the server (bench/local-server.sh, which starts it; no client is used).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
SILENT=${1:-2000}
REQUESTS=${2:-1000}
ulimit -n 8192
CLIENT_BIN=${CLIENT_BIN:-unused}
# shellcheck source=bench/local-server.sh
. "$repo/bench/local-server.sh"
echo "| silent sockets | requests | p50 ms | p99 ms | max ms | failed | silent sockets opened |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
python3 bench/silent_sockets.py "$port" "$token" 0 "$REQUESTS"
python3 bench/silent_sockets.py "$port" "$token" "$SILENT" "$REQUESTS"
