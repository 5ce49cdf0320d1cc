#!/usr/bin/env bash
# Runs a command while sampling how many client connections a PostgreSQL server holds, and
# prints the highest count seen: how the test suite's share of the database is measured
# (BENCHMARKS.md, "PostgreSQL connections during the test suite").
#
#   bash scripts/pg-peak.sh postgres://postgres@127.0.0.1:5432/test -- bash scripts/test.sh
#
# Point it at a server nothing else uses, or the count includes their connections too.
set -euo pipefail

url=${1:?usage: pg-peak.sh POSTGRES_URL -- COMMAND...}
shift
[[ ${1:-} == -- ]] && shift
(($# > 0)) || { echo "usage: pg-peak.sh POSTGRES_URL -- COMMAND..." >&2; exit 2; }

samples=$(mktemp)
trap 'rm -f "$samples"' EXIT
(
    # One connection of our own, counted out below; sampled every 0.1 s.
    while :; do
        psql "$url" -Atc "SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'" \
            2>/dev/null || true
        sleep 0.1
    done
) >"$samples" &
sampler=$!

status=0
"$@" || status=$?
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true

peak=$(sort -n "$samples" | tail -n 1)
echo "pg-peak: ${peak:-0} connections at most ($(wc -l <"$samples") samples)" >&2
exit "$status"
