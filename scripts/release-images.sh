#!/usr/bin/env bash
# Assembles the release's multi-architecture images with podman from the binaries in DIST
# (scripts/release-assets.sh): for every architecture DIST has, the Dockerfile's final stages
# `client` and `server` over a root filesystem from scripts/image-rootfs.sh, passed with
# `--build-context` in place of the stages that would compile it (as the image tests do), so
# nothing is compiled or pulled. Each image's architectures are gathered in a manifest list
# named IMAGE:VERSION. With --push, both lists are pushed as VERSION and MAJOR, and one line
# per image is printed: `client|server NAME@DIGEST`.
#
#   bash scripts/release-images.sh DIST [--push]
#
# IMAGE, SERVER_IMAGE, VERSION and MAJOR come from the environment, else from
# scripts/release-names.sh. `podman login` first for --push.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dist=$(cd "$1" && pwd)
push=false
if [ "${2:-}" = --push ]; then push=true; fi

names=$(bash "$repo/scripts/release-names.sh")
named() { sed -n "s/^$1=//p" <<<"$names"; }
IMAGE=${IMAGE:-$(named IMAGE)}
SERVER_IMAGE=${SERVER_IMAGE:-$(named SERVER_IMAGE)}
VERSION=${VERSION:-$(named VERSION)}
MAJOR=${MAJOR:-$(named MAJOR)}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/context" # the final stages copy only from the named contexts

for list in "$IMAGE:$VERSION" "$SERVER_IMAGE:$VERSION"; do
    if podman manifest exists "$list"; then podman manifest rm "$list" >/dev/null; fi
    podman manifest create "$list" >/dev/null
done

found=0
for arch in x86_64 aarch64; do
    target="$arch-unknown-linux-gnu"
    client="$dist/$(sh "$repo/scripts/release-assets.sh" name client "$target")"
    full="$dist/$(sh "$repo/scripts/release-assets.sh" name full "$target")"
    [ -e "$client" ] || continue
    found=$((found + 1))
    case "$arch" in
        x86_64) platform=linux/amd64 ;;
        aarch64) platform=linux/arm64 ;;
    esac
    # image-rootfs.sh copies the binary with its mode; downloaded artifacts lose theirs.
    chmod 0755 "$client" "$full"
    for kind in client server; do
        dir="$work/$kind-$arch"
        if [ "$kind" = client ]; then
            sh "$repo/scripts/image-rootfs.sh" "$client" /etc/ssl/certs/ca-certificates.crt "$dir"
            stage=rootfs name=$IMAGE
        else
            sh "$repo/scripts/image-rootfs.sh" --server "$full" /etc/ssl/certs/ca-certificates.crt "$dir"
            stage=server-rootfs name=$SERVER_IMAGE
        fi
        # Docker's format, as `docker build` makes: the OCI format has no HEALTHCHECK.
        podman build --quiet --format docker --platform "$platform" --target "$kind" \
            --build-context "$stage=$dir" --tag "$name:$VERSION-$arch" \
            --file "$repo/Dockerfile" "$work/context" >/dev/null
        podman manifest add "$name:$VERSION" "containers-storage:$name:$VERSION-$arch" >/dev/null
        echo "built $name:$VERSION-$arch ($platform)" >&2
    done
done
if [ "$found" -eq 0 ]; then
    echo "scripts/release-images.sh: no \`bldst-client-*\` binary in \`$dist\`" >&2
    exit 1
fi

if [ "$push" = true ]; then
    for kind in client server; do
        if [ "$kind" = client ]; then name=$IMAGE; else name=$SERVER_IMAGE; fi
        for tag in "$VERSION" "$MAJOR"; do
            podman manifest push --all --format v2s2 --digestfile "$work/digest" \
                "$name:$VERSION" "docker://$name:$tag"
        done
        echo "$kind $name@$(cat "$work/digest")"
    done
fi
