#!/usr/bin/env bash
# The benchmark, as BENCHMARKS.md reports it: builds the release `bldst` (root package) and
# `bldst-bench`, makes sure the local PostgreSQL is up (starting its cluster if not), and runs
# every phase. Extra arguments go to bldst-bench, e.g.
#   bash bench/run.sh --backends postgres --clients 8 --duration-secs 30
# Results: a Markdown table on stdout and in bench/results/<time>.md, raw figures in .json.
set -euo pipefail
cd "$(dirname "$0")/.."

export BLDST_BENCH_POSTGRES_URL="${BLDST_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

if ! pg_isready -q -d "$BLDST_BENCH_POSTGRES_URL"; then
    echo "PostgreSQL is not up: starting its cluster" >&2
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 30); do
        pg_isready -q -d "$BLDST_BENCH_POSTGRES_URL" && break
        sleep 1
    done
    pg_isready -d "$BLDST_BENCH_POSTGRES_URL"
fi

cargo build --release --locked -p buildstate -p buildstate-bench
exec target/release/bldst-bench --bldst target/release/bldst "$@"
