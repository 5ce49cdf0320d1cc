#!/usr/bin/env bash
# The setup action's work (setup/action.yml runs it; the tests run it against a local fake
# release, tests/release/setup.rs): puts the released `bldst` on PATH, exports the server and
# the masked token for the job's later steps, and starts or resumes the build, so every stage
# after it is one step: `run: bldst build run --state 15 -- ./stage15.sh`.
#
#   1. the token is masked (`::add-mask::`) before anything else is printed;
#   2. the binary for this runner's architecture (RUNNER_ARCH: X64 or ARM64, Linux only) is
#      taken from the tool cache (RUNNER_TOOL_CACHE/bldst/VERSION/ARCH), or downloaded from
#      RELEASE_URL with the release's SHA256SUMS and refused unless its checksum is the one
#      listed; the cache is only written once the checksum matched;
#   3. its directory goes on GITHUB_PATH, with `bldst-action` beside it;
#   4. BUILDSTATE_API_URL and BUILDSTATE_API_TOKEN go to GITHUB_ENV;
#   5. with a platform and image type, the action's own `start` (the same binary as
#      `bldst-action`: same key default, outputs and job summary) starts or resumes the build,
#      and its id goes to GITHUB_ENV as BUILDSTATE_BUILD_ID, which `bldst build run` reads.
#
# Inputs come as SETUP_* variables (setup/action.yml). Every failure is one `::error::` line
# and exit 1, with nothing installed and nothing exported.
set -euo pipefail

fail() {
    echo "::error title=buildstate setup::$*"
    exit 1
}

api_url=${SETUP_API_URL:-}
token=${SETUP_API_TOKEN:-}
if [ -n "$token" ]; then echo "::add-mask::$token"; fi
[ -n "$api_url" ] || fail "input \`api-url\`: the buildstate server's URL is required, e.g. https://buildstate.example.com"
[ -n "$token" ] || fail "input \`api-token\`: a buildstate API token is required, e.g. \${{ secrets.BUILDSTATE_TOKEN }}"
case "$api_url$token" in
    *$'\n'*) fail "inputs \`api-url\` and \`api-token\` must be one line each" ;;
esac

os=${RUNNER_OS:-$(uname -s)}
case "$os" in
    Linux) ;;
    *) fail "unsupported runner OS \`$os\`: the release has Linux binaries only (x86_64 and aarch64)" ;;
esac
arch=${RUNNER_ARCH:-$(uname -m)}
case "$arch" in
    X64 | x86_64) arch=x86_64 ;;
    ARM64 | aarch64 | arm64) arch=aarch64 ;;
    *) fail "unsupported runner architecture \`$arch\`: the release has x86_64 (X64) and aarch64 (ARM64) Linux binaries" ;;
esac

# The version: the input, else the workspace's version in the action's own checkout (the
# commit the `vMAJOR` tag points at is the release's).
version=${SETUP_VERSION:-}
if [ -z "$version" ]; then
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "${GITHUB_ACTION_PATH:-$(dirname "$0")}/../Cargo.toml" | head -n 1)
fi
version=${version#v}
[ -n "$version" ] || fail "input \`version\`: cannot tell which release to install; set it, e.g. \`1.2.3\`"

release_url=${SETUP_RELEASE_URL:-}
if [ -z "$release_url" ]; then
    [ -n "${SETUP_ACTION_REPOSITORY:-}" ] ||
        fail "input \`release-url\`: cannot tell where the release is; set it to the directory holding the release's files"
    release_url="${GITHUB_SERVER_URL:-https://github.com}/$SETUP_ACTION_REPOSITORY/releases/download/v$version"
fi
release_url=${release_url%/}

# The name scripts/release-assets.sh gives the client-only binary.
asset="bldst-client-$arch-unknown-linux-gnu"
cache_root=${RUNNER_TOOL_CACHE:-${RUNNER_TEMP:-/tmp}}
dir="$cache_root/bldst/$version/$arch"

if [ -f "$dir.complete" ] && [ -x "$dir/bldst" ]; then
    echo "bldst $version ($arch) from the tool cache: $dir"
else
    download=$(mktemp -d "${RUNNER_TEMP:-/tmp}/bldst-download.XXXXXX")
    trap 'rm -rf "$download"' EXIT
    fetch() {
        local error
        if ! error=$(curl --fail --silent --show-error --location --retry 3 --proto '=https,http' \
            --output "$download/$1" "$release_url/$1" 2>&1); then
            fail "cannot download \`$1\` of release $version from $release_url: ${error##*curl: }"
        fi
    }
    fetch SHA256SUMS
    expected=$(awk -v name="$asset" '$2 == name || $2 == "*" name { print $1 }' "$download/SHA256SUMS")
    [ -n "$expected" ] || fail "release $version has no \`$asset\` in its SHA256SUMS: is $arch built for it?"
    fetch "$asset"
    actual=$(sha256sum "$download/$asset" | cut -d ' ' -f 1)
    if [ "$actual" != "$expected" ]; then
        fail "checksum mismatch for \`$asset\` of release $version: SHA256SUMS says $expected, the download is $actual; not installed"
    fi
    rm -rf "$dir" "$dir.complete"
    mkdir -p "$dir"
    install -m 0755 "$download/$asset" "$dir/bldst"
    ln -s bldst "$dir/bldst-action"
    touch "$dir.complete"
    echo "bldst $version ($arch) installed in $dir, sha256 $actual"
fi
"$dir/bldst" --version

echo "$dir" >> "${GITHUB_PATH:-/dev/null}"
{
    echo "BUILDSTATE_API_URL=$api_url"
    echo "BUILDSTATE_API_TOKEN=$token"
} >> "${GITHUB_ENV:-/dev/null}"
{
    echo "bldst-path=$dir/bldst"
    echo "version=$version"
} >> "${GITHUB_OUTPUT:-/dev/null}"

if [ -z "${SETUP_PLATFORM:-}${SETUP_IMAGE_TYPE:-}" ]; then
    echo "no \`platform\` and \`image-type\`: bldst is installed, no build was started"
    exit 0
fi
# The action's `start`, run as the action runs it (INPUT_* names keep their hyphens, so `env`).
started=$(mktemp "${RUNNER_TEMP:-/tmp}/bldst-start.XXXXXX")
env "INPUT_COMMAND=start" "INPUT_API-URL=$api_url" "INPUT_API-TOKEN=$token" \
    "INPUT_PLATFORM=${SETUP_PLATFORM:-}" "INPUT_IMAGE-TYPE=${SETUP_IMAGE_TYPE:-}" \
    "INPUT_KEY=${SETUP_KEY:-}" "INPUT_DESCRIPTION=${SETUP_DESCRIPTION:-}" \
    "INPUT_LABELS=${SETUP_LABELS:-}" "INPUT_MAX-RETRIES=${SETUP_MAX_RETRIES:-}" \
    "INPUT_RETRY-POLICY=${SETUP_RETRY_POLICY:-}" \
    "INPUT_SUMMARY=${SETUP_SUMMARY:-auto}" "INPUT_COMMIT-STATUS=false" \
    "GITHUB_OUTPUT=$started" "$dir/bldst-action" || { rm -f "$started"; exit 1; }
build_id=$(sed -n 's/^build-id=//p' "$started")
cat "$started" >> "${GITHUB_OUTPUT:-/dev/null}"
rm -f "$started"
[ -n "$build_id" ] || fail "the build was started but its id did not come back"
echo "BUILDSTATE_BUILD_ID=$build_id" >> "${GITHUB_ENV:-/dev/null}"
echo "build \`$build_id\`: later steps run \`bldst build run --state N -- COMMAND\`"
