#!/usr/bin/env bash
# What a release changes for a workflow, measured side by side in one run (BENCHMARKS.md,
# "Releases: the action's start and one-line stages"):
#   1. the prebuilt client image, assembled as the release does (scripts/release-images.sh):
#      its size unpacked and compressed (what a pull downloads);
#   2. `bldst-action` started among exactly the image's files (chroot, as root, like a Docker
#      action) for a `gate` step, spawn to exit (its outputs are written before it exits),
#      beside the same binary on the host (hyperfine);
#   3. a 20-stage workflow in both styles: pipelines/github/image-build-one-line.yml, and the
#      action-per-step style of pipelines/github/image-build.yml written out for the same 20
#      stages (generated here, checked with actionlint): lines of YAML and steps;
#   4. the per-stage overhead of `bldst build run --state N -- true` (gate + in_progress +
#      completed, as a whole process) against a local server, beside `true` alone (hyperfine;
#      each run on a fresh build, made in --prepare).
# The Dockerfile's build with and without the dependency cache is bench/image-cache.sh.
#
#   bash bench/release.sh [RUNS]      # RUNS per hyperfine command, 30 by default
#
# Needs root, podman, chroot, hyperfine (apt-get install podman hyperfine). CLIENT_BIN and
# SERVER_BIN as in bench/local-server.sh.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
RUNS=${1:-30}
# shellcheck source=bench/local-server.sh
. "$repo/bench/local-server.sh"
export BUILDSTATE_API_URL="http://127.0.0.1:$port" BUILDSTATE_API_TOKEN="$token"
echo "$(nproc) cores, load $(cut -d ' ' -f 1-3 /proc/loadavg), $(hyperfine --version), $(podman --version)"

echo
echo "== 1. the client image, assembled from the release's binary"
dist="$work/dist"
mkdir "$dist"
target="$(uname -m)-unknown-linux-gnu"
cp "$CLIENT_BIN" "$dist/$(sh scripts/release-assets.sh name client "$target")"
cp "$SERVER_BIN" "$dist/$(sh scripts/release-assets.sh name full "$target")"
image=localhost/buildstate-bench-release
IMAGE=$image SERVER_IMAGE=$image-server VERSION=0.0.0-bench MAJOR=0 \
    bash scripts/release-images.sh "$dist"
tag="$image:0.0.0-bench-$(uname -m)"
echo "unpacked: $(podman image inspect --format '{{.Size}}' "$tag") bytes"
echo "compressed (podman save | gzip -6): $(podman save --format docker-archive "$tag" 2>/dev/null | gzip -6 | wc -c) bytes"
container=$(podman create "$tag")
mkdir "$work/root"
podman export "$container" | tar -x -C "$work/root"
podman rm "$container" >/dev/null
for list in "$image" "$image-server"; do
    podman manifest rm "$list:0.0.0-bench" >/dev/null 2>&1 || true
    podman rmi "$list:0.0.0-bench-$(uname -m)" >/dev/null 2>&1 || true
done

echo
echo "== 2. bldst-action, a gate step, spawn to exit (the image's files vs the host)"
id=$("$CLIENT_BIN" build create --platform aws --image-type rhel8 --key bench/release --quiet)
"$CLIENT_BIN" build update "$id" --state 0 --status completed >/dev/null
mkdir -p "$work/root/github/file_commands"
ln -s "$CLIENT_BIN" "$work/bldst-action"
inputs=("INPUT_COMMAND=gate" "INPUT_API-URL=$BUILDSTATE_API_URL" "INPUT_API-TOKEN=$token"
    "INPUT_BUILD-ID=$id" "INPUT_STATE=0" "INPUT_SUMMARY=auto" "INPUT_ON-BACKOFF=wait"
    "INPUT_MAX-WAIT=900" "INPUT_COMMIT-STATUS=false" "GITHUB_REPOSITORY=org/images"
    "GITHUB_RUN_ID=4242" "GITHUB_SERVER_URL=https://github.com")
hyperfine -N --warmup 3 --runs "$RUNS" --style basic \
    --command-name "image (chroot): bldst-action gate" \
    "env -i ${inputs[*]} GITHUB_OUTPUT=/github/file_commands/output GITHUB_STEP_SUMMARY=/github/file_commands/summary $(command -v chroot) $work/root /usr/local/bin/bldst-action" \
    --command-name "host: bldst-action gate" \
    "env -i ${inputs[*]} GITHUB_OUTPUT=$work/output GITHUB_STEP_SUMMARY=$work/summary $work/bldst-action"
grep -c '^decision=skip$' "$work/output" | sed 's/^/host runs that answered skip: /'

echo
echo "== 3. a 20-stage workflow in both styles"
per_step="$work/image-build-20-stages.yml"
# One step of the action: NAME, its `if:` (or empty), then its command's inputs as lines.
action_step() {
    echo "      - name: $1"
    if [ -n "$2" ]; then echo "        if: $2"; fi
    echo "        uses: example/buildstate@v0"
    echo "        with:"
    echo "          api-url: \${{ vars.BUILDSTATE_API_URL }}"
    echo "          api-token: \${{ secrets.BUILDSTATE_TOKEN }}"
    echo "          build-id: \${{ steps.start.outputs.build-id }}"
    shift 2
    printf '          %s\n' "$@"
}
{
    sed -n '/^name:/,/commit-status: true$/p' pipelines/github/image-build.yml
    for state in $(seq 5 5 100); do
        echo
        action_step "gate stage $state" "" "command: gate" "state: $state" |
            sed "1a\        id: gate-$state"
        echo "      - name: stage $state"
        echo "        id: stage-$state"
        echo "        if: steps.gate-$state.outputs.skip != 'true'"
        echo "        run: ./stages/$state.sh 2>&1 | tee stage.log"
        action_step "report stage $state completed" "steps.gate-$state.outputs.skip != 'true'" \
            "command: report" "state: $state" "status: completed"
        action_step "report stage $state failed" "failure() && steps.stage-$state.outcome == 'failure'" \
            "command: report" "state: $state" "status: failed" "message-file: stage.log"
    done
} > "$per_step"
one_line=pipelines/github/image-build-one-line.yml
target/lint-venv/bin/actionlint "$per_step" "$one_line" 2>/dev/null && echo "actionlint: both clean" ||
    echo "actionlint: not run (bash scripts/lint-action.sh installs it)"
echo "| style | lines | steps | of which run the action or bldst |"
echo "|---|---|---|---|"
for file in "$per_step" "$one_line"; do
    printf '| %s | %s | %s | %s |\n' "$(basename "$file")" "$(wc -l < "$file")" \
        "$(grep -cE '^      - ' "$file")" "$(grep -cE '^ +(- )?(uses: example/buildstate|run: bldst build run)' "$file")"
done

echo
echo "== 4. bldst build run: the per-stage overhead (a fresh build per run)"
export CLIENT_BIN work
hyperfine -N --warmup 2 --runs "$RUNS" --style basic \
    --prepare "sh -c '\"\$CLIENT_BIN\" build create --platform aws --image-type rhel8 --quiet > \"\$work/id\"'" \
    --command-name "bldst build run --state 5 -- true" \
    "sh -c 'BUILDSTATE_BUILD_ID=\$(cat \"\$work/id\") exec \"\$CLIENT_BIN\" build run --state 5 -- true'" \
    --command-name "true alone (the same shell and id file)" \
    "sh -c 'BUILDSTATE_BUILD_ID=\$(cat \"\$work/id\") exec true'"
# Every run of the first command took a fresh build from stage 0 to 10 (5 completed, 0 skipped).
echo "builds at stage 10 after the runs: $("$CLIENT_BIN" -o json build list --state 10 --limit 100 |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["builds"] if isinstance(d, dict) else d))') (expected: $((RUNS + 2)))"
