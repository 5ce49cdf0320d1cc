#!/usr/bin/env bash
# The OpenAPI document tells the truth: schemathesis (pinned below, installed in a venv under
# target/) runs against the live `bldst server`, on a fresh SQLite file and on a scratch
# PostgreSQL database, with every check and every phase (examples, coverage, fuzzing, and
# stateful runs along the document's links), a bounded number of examples per operation, and
# zero failures allowed. Settings and their few exceptions: scripts/schemathesis.toml.
#
#   bash scripts/schemathesis.sh                 # both databases
#   bash scripts/schemathesis.sh sqlite          # one
#   SCHEMATHESIS_MAX_EXAMPLES=200 SCHEMATHESIS_SEED=42 bash scripts/schemathesis.sh
#
# Uses target/debug/bldst (built if missing), or the binary named by BLDST. PostgreSQL comes
# from BUILDSTATE_TEST_POSTGRES_URL (the local server of scripts/services.sh by default).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
venv=target/schemathesis-venv
examples=${SCHEMATHESIS_MAX_EXAMPLES:-100}
postgres_url=${BUILDSTATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
backends=("$@")
[[ ${#backends[@]} -gt 0 ]] || backends=(sqlite postgres)

if [[ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != *"$SCHEMATHESIS_VERSION"* ]]; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

bldst=${BLDST:-target/debug/bldst}
if [[ -z "${BLDST:-}" ]]; then
    cargo build --quiet --bin bldst
fi

work=$(mktemp -d)
server_pid=
scratch_database=
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
    if [[ -n "$scratch_database" ]]; then
        psql "$postgres_url" -qc "DROP DATABASE IF EXISTS $scratch_database WITH (FORCE)" || true
        scratch_database=
    fi
}
trap 'cleanup; rm -rf "$work"' EXIT

# Starts the server on DATABASE_URL with a fresh admin token, runs schemathesis, stops it.
run_against() {
    local backend=$1 log="$work/$1-server.log" address= token
    export SECRET_KEY="schemathesis-key-of-32-bytes-or-more-$RANDOM$RANDOM" NO_COLOR=1
    token=$("$bldst" server bootstrap --username admin --email admin@example.com 2>/dev/null)
    # Rate limits off: the fuzzer sends thousands of requests with one token and hundreds with
    # bad ones from one address, more than any client; a 429 would stop it exploring (the 429
    # answers are documented and tested in tests/api/rate_limits.rs).
    BUILDSTATE_RATE_LIMIT_FAILED_AUTHS=0 BUILDSTATE_RATE_LIMIT_WRITES=0 \
        "$bldst" server --listen 127.0.0.1:0 >"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        address=$(sed -n 's/.*address=\([0-9.:]*\).*/\1/p' "$log" | head -n 1)
        [[ -n "$address" ]] && break
        sleep 0.1
    done
    if [[ -z "$address" ]]; then
        echo "error: the $backend server did not start; its log:" >&2
        cat "$log" >&2
        return 1
    fi
    local seed=()
    [[ -n "${SCHEMATHESIS_SEED:-}" ]] && seed=(--seed "$SCHEMATHESIS_SEED")
    printf '\n== schemathesis on %s (%s examples per operation)\n' "$backend" "$examples"
    local status=0
    # Excluded, and only these two: the server-sent event streams (`GET /events`,
    # `GET /builds/{id}/events`). A stream that is accepted never ends, by design (it carries
    # transitions as they happen), so schemathesis waits for a body that never completes and no
    # response check can run; a request timeout would only turn each into an error. Their
    # refusals of a bad `Last-Event-ID` or `after`, and their document (those parameters, the
    # `x-itemSchema` of each event), are checked by tests/api/reports.rs instead.
    "$venv/bin/schemathesis" --config-file scripts/schemathesis.toml --no-color run \
        "http://$address/openapi.json" \
        --exclude-path-regex '^/events$|^/builds/\{id\}/events$' \
        --header "Authorization: Bearer $token" \
        --checks all \
        --max-examples "$examples" \
        "${seed[@]}" || status=$?
    cleanup
    if [[ $status -ne 0 ]]; then
        echo "error: schemathesis found failures on $backend (server log: last lines below)" >&2
        tail -n 20 "$log" >&2
    fi
    return "$status"
}

failed=0
for backend in "${backends[@]}"; do
    case "$backend" in
        sqlite)
            export DATABASE_URL="sqlite://$work/buildstate.db"
            ;;
        postgres)
            scratch_database="bst_schemathesis_$RANDOM$RANDOM"
            psql "$postgres_url" -qc "CREATE DATABASE $scratch_database"
            export DATABASE_URL="${postgres_url%/*}/$scratch_database"
            ;;
        *)
            echo "error: unknown backend \`$backend\`: use sqlite or postgres" >&2
            exit 2
            ;;
    esac
    run_against "$backend" || failed=1
done
exit "$failed"
