#!/usr/bin/env bash
# The Dockerfile's two build caches, measured outside a container engine: the client `rootfs`
# stage's steps, one after the other, in a copy of this working tree with a target directory of
# its own (what a fresh layer starts from):
#   1. `cargo chef prepare` (the planner stage),
#   2. `scripts/build-static.sh client --cook` (the cached layer: every dependency),
#   3. `scripts/build-static.sh` (the workspace's crates, after COPY . .): what a source-only
#      change costs with the layer cache alone (a builder that keeps layers, not mounts),
#   4. step 3 again on a fresh copy of the cooked layer, through sccache with an empty cache
#      directory (the Dockerfile's cache mount, the first time): what filling the cache costs,
#   5-7. a one-line change (to src/main.rs, src/cli/mod.rs, crates/domain/src/lib.rs), then
#      step 3 on a fresh copy of the cooked layer with the cache directory step 4 filled: what a
#      source-only change costs with both caches (the crates whose sources did not change come
#      out of sccache; the changed one and those that depend on it compile).
# Without either cache (the Dockerfile before cargo-chef: COPY . . first) any change re-runs the
# whole build: steps 2 + 3. Prints each step's wall time. Minutes of both cores.
#
#   bash bench/image-cache.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v cargo-chef >/dev/null; then
    cargo install cargo-chef --locked --version 0.1.78
fi
command -v sccache >/dev/null || { echo "error: sccache is needed (apt-get install sccache)" >&2; exit 1; }
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
cp -a target "$work/cooked"
tar -C "$work/context" -cf - . | tar -C "$work/src" -xf -
step "3. build the workspace's crates (layer cache)" scripts/build-static.sh client
# A server already running would keep its own cache directory.
sccache --stop-server >/dev/null 2>&1 || true
export SCCACHE_DIR="$work/sccache"
fresh_layer() { rm -rf target && cp -a "$work/cooked" target; }
fresh_layer
step "4. the same through sccache, its cache empty" env RUSTC_WRAPPER=sccache scripts/build-static.sh client
sccache --stop-server >/dev/null 2>&1 || true
# Where the change is decides what compiles: its crate and every crate that depends on it
# (src/main.rs: the binary alone; src/cli/: the command line, then the binary; crates/domain/:
# all five).
changed_at() {
    local number=$1 file=$2
    fresh_layer
    tar -C "$work/context" -cf - . | tar -C "$work/src" -xf -
    echo '// a one-line source change' >> "$file"
    step "$number. a one-line change in $file (both caches)" env RUSTC_WRAPPER=sccache scripts/build-static.sh client
    sccache --stop-server >/dev/null 2>&1 || true
}
changed_at 5 src/main.rs
changed_at 6 src/cli/mod.rs
changed_at 7 crates/domain/src/lib.rs
echo "client binary: $(stat -c %s target/static/client/bldst) bytes; $(sccache --version)"
echo "load after: $(cut -d ' ' -f 1-3 /proc/loadavg)"
