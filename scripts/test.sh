#!/usr/bin/env bash
# The test command: the whole suite, every database test on a fresh SQLite file AND on a scratch
# database of the local PostgreSQL (started if down). Extra arguments go to `cargo test`.
# Ends with one line totalling every test binary ("N passed, N failed"), since cargo's own last
# line is that of the doc-tests, which are few.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
export BUILDSTATE_TEST_POSTGRES_URL="${BUILDSTATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "\ntests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
