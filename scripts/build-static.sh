#!/usr/bin/env sh
# Builds the client binary (`bldst` without the server feature) as one static executable with
# no symbols, for the image's `FROM scratch` root filesystem: glibc linked statically
# (`crt-static`), so nothing else is needed at run time (glibc 2.34+ resolves DNS without
# loading NSS modules). Used by the Dockerfile's `rootfs` stage, by the image test and by
# bench/resource.sh, so all three run the same binary. Prints the binary's path.
#
#   scripts/build-static.sh            # -> target/<arch>-unknown-linux-gnu/release/bldst
set -eu
cd "$(dirname "$0")/.."
target="$(uname -m)-unknown-linux-gnu"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --no-default-features --bin bldst --target "$target" >&2
echo "target/$target/release/bldst"
