#!/usr/bin/env sh
# The release's files, named once here: the static `bldst` for this machine's architecture, in
# two kinds (scripts/build-static.sh), and SHA256SUMS over all of them.
#
#   bldst-TARGET          everything: the command line and `bldst server` (what people install,
#                         what `cargo binstall` fetches)
#   bldst-client-TARGET   without the server (no axum, no sqlx): the client image's binary, and
#                         what the setup action puts on PATH
#
# TARGET is x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu (statically linked glibc:
# the name says which C library it was built against, nothing is loaded at run time).
#
#   scripts/release-assets.sh build DIR       # builds both kinds here, copies them into DIR
#   scripts/release-assets.sh checksums DIR   # writes DIR/SHA256SUMS over every bldst-* in DIR
#   scripts/release-assets.sh name KIND TARGET   # prints an asset's name (KIND: full or client)
#
# The release workflow runs `build` on one runner per architecture, then `checksums` over
# both architectures' files; tests/release/assets.rs runs the same here.
set -eu
cd "$(dirname "$0")/.."

name() {
    case "$1" in
        full) echo "bldst-$2" ;;
        client) echo "bldst-client-$2" ;;
        *) echo "scripts/release-assets.sh: unknown kind \`$1\`: use full or client" >&2; exit 2 ;;
    esac
}

command=${1:-}
case "$command" in
    name)
        name "$2" "$3"
        ;;
    build)
        dir=$2
        target="$(uname -m)-unknown-linux-gnu"
        mkdir -p "$dir"
        cp "$(scripts/build-static.sh server)" "$dir/$(name full "$target")"
        cp "$(scripts/build-static.sh client)" "$dir/$(name client "$target")"
        ls -l "$dir" >&2
        ;;
    checksums)
        dir=$2
        # Names only (no directory), in the shell's sorted order, so `sha256sum --check
        # SHA256SUMS` works wherever the files were downloaded to.
        cd "$dir"
        set -- bldst-*
        if [ ! -e "$1" ]; then
            echo "scripts/release-assets.sh: no \`bldst-*\` file in \`$dir\`" >&2
            exit 1
        fi
        sha256sum "$@" > SHA256SUMS.tmp
        mv SHA256SUMS.tmp SHA256SUMS
        sha256sum --check --quiet SHA256SUMS
        cat SHA256SUMS
        ;;
    *)
        echo "usage: scripts/release-assets.sh build DIR | checksums DIR | name KIND TARGET" >&2
        exit 2
        ;;
esac
