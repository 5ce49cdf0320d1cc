#!/usr/bin/env bash
# The Concourse resource as Concourse runs it: `check`, `in` and `out` as whole processes
# (spawn, one request to a local server, JSON out), beside a Python `check` making the same
# calls with plain `requests`; plus the stripped static binary's size and, with podman, the
# client image's size. Results go to BENCHMARKS.md by hand.
#
#   bash bench/resource.sh [RUNS]        # RUNS per command, 50 by default
#
# CLIENT_BIN and SERVER_BIN choose the binaries (bench/local-server.sh, which starts the server).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
RUNS=${1:-50}
# shellcheck source=bench/local-server.sh
. "$repo/bench/local-server.sh"

mkdir -p "$work/opt/resource" "$work/in" "$work/out"
for name in check in out; do ln -s "$CLIENT_BIN" "$work/opt/resource/$name"; done
source_json="{\"api_url\":\"http://127.0.0.1:$port\",\"token\":\"$token\",\"platform\":\"aws\",\"image_type\":\"rhel8\",\"key\":\"bench\"}"
# A build with some history to read.
for report in '{}' '{"state":5,"status":"completed"}' '{"state":10,"status":"completed"}' '{"state":15,"status":"in_progress"}'; do
    echo "{\"source\":$source_json,\"params\":$report}" | env -i "$work/opt/resource/out" "$work/out" >"$work/last.json"
done
version=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["version"]))' "$work/last.json")
echo "{\"source\":$source_json}" >"$work/check.json"
echo "{\"source\":$source_json,\"version\":$version}" >"$work/in.json"
# `in_progress` again on the stage in progress: a real report each time (no Concourse BUILD_ID,
# so no idempotency key), the history grows by one per run.
echo "{\"source\":$source_json,\"params\":{\"state\":15,\"status\":\"in_progress\"}}" >"$work/out.json"

sep=$'\x1f'
mkdir -p "$work/tmp"
export TMPDIR="$work/tmp"   # the fresh step directories, removed with $work
echo "client binary: $(stat -c %s "$CLIENT_BIN") bytes ($(file -b "$CLIENT_BIN" | cut -d, -f1-2))"
python3 bench/resource_bench.py "$RUNS" \
    "check (bldst)${sep}$work/check.json${sep}$work/opt/resource/check" \
    "check (Python + requests)${sep}$work/check.json${sep}python3${sep}$repo/bench/python_check.py" \
    "in (bldst)${sep}$work/in.json${sep}$work/opt/resource/in${sep}{fresh}" \
    "out (bldst)${sep}$work/out.json${sep}$work/opt/resource/out${sep}{fresh}"

if command -v podman >/dev/null; then
    scripts/image-rootfs.sh "$CLIENT_BIN" /etc/ssl/certs/ca-certificates.crt "$work/image"
    mkdir -p "$work/context"
    podman build --quiet --target client --tag localhost/buildstate-bench:latest \
        --build-context "rootfs=$work/image" --file Dockerfile "$work/context" >/dev/null
    echo "client image: $(podman image inspect --format '{{.Size}}' localhost/buildstate-bench:latest) bytes"
    podman rmi localhost/buildstate-bench:latest >/dev/null
fi
