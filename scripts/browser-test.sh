#!/usr/bin/env bash
# The dashboard in headless Chromium against a real `bldst server` (SQLite) seeded with builds:
# the list (blocked first, keys, retry counts, a countdown), a build's ladder, details and
# timeline, a transition appearing live, the reports' charts, on a laptop (1400 px) and a phone
# (390 px); an admin's operator actions. Screenshots go to target/screenshots/.
#
# Needs: Debian's `chromium` (or CHROMIUM=/path), node >= 18 and npm; `.ci/run` installs them.
# Usage: bash scripts/browser-test.sh   (builds target/debug/bldst if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || { echo "error: no Chromium at $CHROMIUM (apt-get install chromium, or set CHROMIUM)" >&2; exit 1; }
command -v node >/dev/null || { echo "error: node is not installed (apt-get install nodejs npm)" >&2; exit 1; }

(cd tests/browser && npm ci --no-audit --no-fund --silent)
cargo build --quiet --bin bldst
bldst=$root/target/debug/bldst

work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

export DATABASE_URL="sqlite://$work/buildstate.db"
export SECRET_KEY=browser-test-key-of-32-bytes-or-more
# An hour's backoff: the failed build's next attempt is a countdown the test can read. No seed
# fails a stage twice in a row (the blocked build allows no retry), so none waits for it.
export BUILDSTATE_BACKOFF_BASE_SECS=3600
admin=$("$bldst" server bootstrap --username admin --email admin@example.com 2>/dev/null | grep -o 'bst_[A-Za-z0-9_-]*' | tail -1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bldst" server --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server_pid=$!
export BASE_URL="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -fs "$BASE_URL/health" >/dev/null && break; sleep 0.1; done

api() { # METHOD PATH [JSON]
    curl -fsS -X "$1" "$BASE_URL$2" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' ${3:+-d "$3"}
}
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
start() { api POST /builds "{\"platform\":\"$1\",\"image_type\":\"$2\",\"max_retries\":$3}" | json "['build']['id']"; }
report() { api POST "/builds/$1/transitions" "{\"state\":$2,\"status\":\"$3\",\"message\":\"$4\",\"source\":\"https://ci.example.com/runs/42\"}" >/dev/null; }

# Seed: a published build, a blocked one, one running at 20 (10 done by a jump, 15 failed once).
published=$(start aws rhel8 3)
for code in 10 20 30 40 50 60 70 80 90 100; do report "$published" $code completed "stage $code done"; done
blocked=$(start azure ubuntu-22.04-web 0)
report "$blocked" 10 completed "golden image ready"
report "$blocked" 15 failed "dnf: could not resolve host"
running=$(start gcp rhel8 3)
report "$running" 10 completed "base image"
report "$running" 15 in_progress "configuring"
report "$running" 15 failed "ansible: unreachable"
report "$running" 15 completed "configured on retry"
report "$running" 20 completed "hardened"
for n in 1 2 3; do b=$(start vsphere "windows-2022"  3); report "$b" $((n * 10)) completed "stage $((n * 10))"; done
# A keyed, labelled build with an output, failed once and backing off.
failed=$(api POST /builds '{"platform":"aws","image_type":"rhel9","key":"aws/rhel9/nightly","labels":{"git_sha":"0a1b2c3","owner":"images-team"},"max_retries":3}' | json "['build']['id']")
api POST "/builds/$failed/transitions" '{"state":10,"status":"completed","message":"green image","outputs":{"ami_id":"ami-0abc1234"}}' >/dev/null
report "$failed" 15 failed "dnf: mirror timed out"
# A pipeline that jumps from 10 to 100: seventeen stages recorded as skipped.
jumped=$(start gcp ubuntu-24.04 3)
report "$jumped" 10 completed "base image"
report "$jumped" 100 completed "published"

export TOKEN=$(api POST /tokens '{"username":"admin","description":"browser test","scope":"read"}' | json "['secret']")
export WRITE_TOKEN=$admin ADMIN_TOKEN=$admin BLOCKED_ID=$blocked RUNNING_ID=$running FAILED_ID=$failed JUMPED_ID=$jumped
export SCREENSHOTS=$root/target/screenshots
if ! node tests/browser/dashboard.test.js; then
    echo "--- server log" >&2; tail -n 30 "$work/server.log" >&2
    exit 1
fi
echo "screenshots: $SCREENSHOTS"
