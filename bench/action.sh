#!/usr/bin/env bash
# The GitHub Action's steps as whole processes, the way a runner starts a Docker action's
# entrypoint: `gate` (skip and run) and `report`, each RUNS times, against a local release
# server on SQLite (bench/action_bench.py: median wall time and peak RSS). A gate step is on
# every stage of every workflow run, so this is the cost a workflow pays per stage on top of
# the container start. Results go to BENCHMARKS.md by hand.
#
#   bash bench/action.sh [RUNS]        # RUNS per step, 50 by default
#
# CLIENT_BIN and SERVER_BIN choose the binaries (bench/local-server.sh, which starts the server).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
RUNS=${1:-50}
# shellcheck source=bench/local-server.sh
. "$repo/bench/local-server.sh"

# A build at stage 20 with some history and outputs, through the CLI.
export BUILDSTATE_API_URL="http://127.0.0.1:$port" BUILDSTATE_API_TOKEN="$token"
id=$("$CLIENT_BIN" build create --platform aws --image-type rhel8 --key bench/action --quiet)
for state in 0 5 10 15; do
    "$CLIENT_BIN" build update "$id" --state "$state" --status completed --set "ami_id=ami-$state" >/dev/null
done
unset BUILDSTATE_API_URL BUILDSTATE_API_TOKEN

ln -s "$CLIENT_BIN" "$work/bldst-action"
echo "client binary: $(stat -c %s "$CLIENT_BIN") bytes"
python3 bench/action_bench.py "$RUNS" "$work/bldst-action" "http://127.0.0.1:$port" "$token" "$id"
echo "history entries of the build after the runs: $(
    BUILDSTATE_API_URL="http://127.0.0.1:$port" BUILDSTATE_API_TOKEN="$token" \
        "$CLIENT_BIN" -o json build history "$id" --limit 1000 |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin)["entries"]))'
)"
