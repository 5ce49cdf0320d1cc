#!/usr/bin/env sh
# Builds `bldst` as one static executable with no symbols, for the images' `FROM scratch` root
# filesystems: glibc linked statically (`crt-static`), so nothing else is needed at run time
# (glibc 2.34+ resolves DNS without loading NSS modules).
#
#   client (the default): without the server feature, so neither axum nor sqlx — the Concourse
#           resource's and the GitHub Action's image;
#   server: with it — the server image. SQLite is compiled in from C source (libsqlite3-sys's
#           `bundled`, which sqlx's `sqlite` feature turns on), so it links statically too.
#
# Both kinds land in the same target/<arch>/release/bldst, so the binary is copied to
# target/static/KIND/bldst, where the other kind's build cannot overwrite it; one target
# directory lets both reuse the dependencies they share. Used by the Dockerfile's rootfs
# stages, by the image tests and by bench/resource.sh, so all run the same binaries. Prints the
# binary's path.
#
#   scripts/build-static.sh            # -> target/static/client/bldst
#   scripts/build-static.sh server     # -> target/static/server/bldst
#   scripts/build-static.sh KIND --cook RECIPE   # only the dependencies, from a cargo-chef
#                                                # recipe (the Dockerfile's cached layer)
set -eu
cd "$(dirname "$0")/.."
kind=${1:-client}
case "$kind" in
    client) features=--no-default-features ;;
    server) features=--features=server ;;
    *) echo "scripts/build-static.sh: unknown kind \`$kind\`: use client or server" >&2; exit 2 ;;
esac
target="$(uname -m)-unknown-linux-gnu"
if [ "${2:-}" = --cook ]; then
    # The same flags and environment as the build below: cargo reuses what the cook compiled
    # only when they match.
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
        cargo chef cook --release --locked "$features" --bin bldst --target "$target" --recipe-path "$3" >&2
    exit 0
fi
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked "$features" --bin bldst --target "$target" >&2
mkdir -p "target/static/$kind"
cp "target/$target/release/bldst" "target/static/$kind/bldst"
echo "target/static/$kind/bldst"
