#!/usr/bin/env bash
# The test command: the whole suite, every database test on a fresh SQLite file AND on a scratch
# database of the local PostgreSQL (started if down). Extra arguments go to `cargo test`.
# `--no-fail-fast` runs every test binary even after one fails, and the run ends with one line
# totalling them all ("N passed, N failed"), since cargo's own last line is that of the
# doc-tests, which are few. The PostgreSQL tests hold at most 44 connections at once, the tests
# that start server processes included (tests/support/mod.rs; 26 measured, BENCHMARKS.md),
# well inside the default 100.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
export BUILDSTATE_TEST_POSTGRES_URL="${BUILDSTATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "\ntests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
