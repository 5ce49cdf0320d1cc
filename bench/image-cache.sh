#!/usr/bin/env bash
# The Dockerfile's dependency cache (cargo-chef), measured outside a container engine: the
# client `rootfs` stage's steps, one after the other, in a copy of this working tree with a
# target directory of its own (what a fresh layer starts from):
#   1. `cargo chef prepare` (the planner stage),
#   2. `scripts/build-static.sh client --cook` (the cached layer: every dependency),
#   3. `scripts/build-static.sh` (the workspace's crates, after COPY . .),
#   4. a one-line change to src/main.rs, then step 3 again: what a source-only change costs
#      with the cache (layers 1-2 reused). Without the cache (the Dockerfile before cargo-chef:
#      COPY . . first) any change re-runs the whole build: steps 2 + 3.
# Prints each step's wall time. One cold build: minutes of both cores.
#
#   bash bench/image-cache.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v cargo-chef >/dev/null; then
    cargo install cargo-chef --locked --version 0.1.78
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The build context, and the stage's directory: only the recipe and the build script until
# the cook is done (the cook writes a skeleton of the workspace there), then the sources over
# it, their modification times kept, as COPY . . does.
mkdir "$work/context" "$work/src" "$work/src/scripts"
tar -C "$repo" --exclude=./target --exclude=./.git -cf - . | tar -C "$work/context" -xf -
cp "$repo/scripts/build-static.sh" "$work/src/scripts/"
step() {
    local name=$1 start end
    shift
    start=$(date +%s.%N)
    "$@" > /dev/null 2> "$work/step.log" || { cat "$work/step.log" >&2; exit 1; }
    end=$(date +%s.%N)
    printf '%-52s %8.1f s\n' "$name" "$(echo "$end - $start" | bc)"
}

echo "cargo-chef $(cargo chef --version | awk '{print $2}'), $(rustc --version), $(nproc) cores, load $(cut -d ' ' -f 1-3 /proc/loadavg)"
cd "$work/context"
step "1. cargo chef prepare" cargo chef prepare --recipe-path "$work/recipe.json"
cd "$work/src"
step "2. cook the dependencies (the cached layer)" scripts/build-static.sh client --cook "$work/recipe.json"
tar -C "$work/context" -cf - . | tar -C "$work/src" -xf -
step "3. build the workspace's crates" scripts/build-static.sh client
echo '// a one-line source change' >> src/main.rs
step "4. after a one-line change, with the cache" scripts/build-static.sh client
echo "client binary: $(stat -c %s target/static/client/bldst) bytes"
echo "load after: $(cut -d ' ' -f 1-3 /proc/loadavg)"
