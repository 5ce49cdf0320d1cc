#!/usr/bin/env bash
# The test command: the whole suite, every database test on a fresh SQLite file AND on a scratch
# database of the local PostgreSQL (started if down). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
export BUILDSTATE_TEST_POSTGRES_URL="${BUILDSTATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
exec cargo test --workspace "$@"
