#!/usr/bin/env bash
# A resumed build, end to end, against a local buildstate server it starts and stops itself:
# the first run of the pipeline fails at stage 15; after the "fix", the same pipeline is run
# again, skips stages 0-10, retries 15 and goes on to publish. Stage 10 leaves the image id it
# made as an output; the re-run's stage 15 gets it back from the server, not from a file the
# pipeline kept. Stage 20 is flaky (it fails once): `--retry` runs it again by itself once the
# server makes its retry due, with nobody re-running anything.
#
#   bash pipelines/shell/resume-demo.sh            # `bldst` from PATH, else target/release, else target/debug
#   BLDST=/path/to/bldst bash pipelines/shell/resume-demo.sh
#   PORT=18766 bash pipelines/shell/resume-demo.sh # another port for its server (default 18765)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)

# The binary: $BLDST, else `bldst` on PATH (`cargo install --path . --locked`), else a build
# in this checkout (`cargo build --release`, or `cargo build`).
find_bldst() {
    if [ -n "${BLDST:-}" ]; then
        [ -x "$BLDST" ] || { echo "error: BLDST=$BLDST is not an executable file" >&2; return 1; }
        echo "$BLDST"
    elif command -v bldst >/dev/null 2>&1; then
        command -v bldst
    elif [ -x "$repo/target/release/bldst" ]; then
        echo "$repo/target/release/bldst"
    elif [ -x "$repo/target/debug/bldst" ]; then
        echo "$repo/target/debug/bldst"
    else
        cat >&2 <<EOM
error: no \`bldst\` binary found: not on PATH, not in $repo/target/release or $repo/target/debug
Install it with \`cargo install --path . --locked\` (from $repo), or build it with
\`cargo build --release\`, or point BLDST at one.
EOM
        return 1
    fi
}
BLDST=$(find_bldst) || exit 127
echo "using $BLDST" >&2
PORT=${PORT:-18765}
work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m## %s\033[0m\n' "$*"; }

# A throw-away server: a fresh SQLite file, no backoff so the retry can happen at once, and a
# retry made due within a fifth of a second of its failure.
export DATABASE_URL="sqlite://$work/buildstate.db" SECRET_KEY=demo-only-key-of-32-bytes-or-more-00000
export BUILDSTATE_BACKOFF_BASE_SECS=0 BUILDSTATE_RETRY_CHECK_MILLIS=200 BUILDSTATE_LISTEN="127.0.0.1:$PORT"
if ! BUILDSTATE_API_TOKEN=$("$BLDST" server bootstrap --username demo --email demo@example.com 2>"$work/bootstrap.log"); then
    cat "$work/bootstrap.log" >&2
    echo "error: \`$BLDST server bootstrap\` failed (above)" >&2
    exit 1
fi
"$BLDST" server >"$work/server.log" 2>&1 &
server_pid=$!
export BUILDSTATE_API_URL="http://127.0.0.1:$PORT" BUILDSTATE_API_TOKEN
export BUILDSTATE_CONFIG="$work/config.json"
# Up to a minute for the server to answer (a busy machine), but not past its exit.
up=
for _ in $(seq 600); do
    if "$BLDST" build list >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$up" ]; then
    cat "$work/server.log" >&2
    echo "error: the demo server did not answer on $BUILDSTATE_API_URL (its log is above; another PORT?)" >&2
    exit 1
fi

# The pipeline: every step wrapped in `bldst build run`. Stage 15 fails until the mirror
# is "fixed" (a file appears), as a flaky package mirror would.
pipeline() {
    BUILD_ID=$("$BLDST" build create --platform aws --image-type rhel8 --key aws/rhel8/demo \
        --description "resume demo" --quiet)
    "$BLDST" build run "$BUILD_ID" --state 0 -- echo "pipeline triggered"
    "$BLDST" build run "$BUILD_ID" --state 5 -- echo "kickstart: OS installed"
    # The image id exists only in this run's memory: it reaches the re-run as an output.
    "$BLDST" build run "$BUILD_ID" --state 10 -- sh -c '
        ami="ami-0$(od -An -N6 -tx1 /dev/urandom | tr -d " \n")"
        echo "green image: $ami boots, SSH up"
        echo "ami_id=$ami" >> "$BLDST_OUTPUTS_FILE"'
    "$BLDST" build run "$BUILD_ID" --state 15 -- sh -c '
        ami=$("$0" build outputs "$BUILDSTATE_BUILD_ID" ami_id)
        echo "base configuration: starting an instance from $ami"
        if [ ! -e "$1/mirror-fixed" ]; then echo "dnf: mirror timed out" >&2; exit 1; fi
        echo "base configuration applied on $ami"' "$BLDST" "$work"
    # Flaky: the cloud provider's API fails the first call. `--retry` waits until the server
    # makes the retry due (after the backoff) and runs the step again.
    "$BLDST" build run "$BUILD_ID" --state 20 --retry --max-wait 1m -- sh -c '
        if [ ! -e "$0/provider-flaked" ]; then
            touch "$0/provider-flaked"; echo "cloud provider API: 503" >&2; exit 1
        fi
        echo "cloud provider setup done"' "$work"
    "$BLDST" build run "$BUILD_ID" --state 100 -- echo "image published"
}

say "first run: fails at stage 15"
# Not `if (pipeline)` or `pipeline || ...`: bash ignores `set -e` there, and the steps after
# the failed one would run.
set +e
(set -e; pipeline)
status=$?
set -e
echo "the pipeline exited with code $status"
[ "$status" -ne 0 ] || { echo "unexpected: the first run succeeded" >&2; exit 1; }
BUILD_ID=$("$BLDST" build list --key aws/rhel8/demo --quiet)
"$BLDST" build get "$BUILD_ID"

say "the outputs the re-run will get"
"$BLDST" build outputs "$BUILD_ID"

say "the mirror is fixed; the same pipeline runs again and resumes at stage 15"
touch "$work/mirror-fixed"
pipeline

say "history of build $BUILD_ID"
history=$("$BLDST" build history "$BUILD_ID")
printf '%s\n' "$history"

# One line on what resuming did, read from that history (columns: seq, stage, event, ...):
# the stages completed before the first failure were skipped by the re-run, the failed stage
# ran again, and stage 100 completed means the image is published.
say "summary"
printf '%s\n' "$history" | awk '
    $1 !~ /^[0-9]+$/ { next }
    $3 == "failed" { failures[$2]++; if (retried == "") retried = $2 }
    $3 == "completed" && retried == "" { skipped = skipped (skipped == "" ? "" : ", ") $2 }
    $2 == 100 && $3 == "completed" { published = 1 }
    END {
        printf "the re-run skipped stages %s (completed by the first run), ran stage %s again after %d failure(s), and %s\n",
            skipped, retried, failures[retried], published ? "published the image (stage 100)" : "did not publish the image"
    }'
# And what resuming saved, as the server recorded it (docs/rules.md, "What resuming saved"): the
# re-run's stage 15 and the automatic retry of stage 20 each did not run the stages before them.
"$BLDST" report savings --days 1 2>/dev/null | sed -n 1p
