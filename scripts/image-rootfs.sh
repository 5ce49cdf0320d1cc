#!/usr/bin/env sh
# Assembles an image's whole root filesystem in DIR/rootfs around a static `bldst`
# (scripts/build-static.sh). The Dockerfile's rootfs stages run it; the image tests run it on a
# locally built binary and hand DIR to `podman build --build-context` in place of that stage,
# so the tested image is the Dockerfile's final stage over the same layout.
#
# Both images: the binary at /usr/local/bin/bldst, the CA bundle at
# /etc/ssl/certs/ca-certificates.crt, a world-writable, sticky /tmp (SQLite's and anything
# else's temporary files; there is no other writable place for a non-root user), and
# /etc/nsswitch.conf saying `hosts: files dns`: without it glibc asks DNS first and reads the
# /etc/hosts the container runtime writes (localhost, --add-host, links) only when DNS is
# unreachable.
#
# The client image (default): the Concourse resource's /opt/resource/{check,in,out}, the
# GitHub Action's entrypoint /usr/local/bin/bldst-action and `bldst_cli`, as links to the
# binary (it picks its front end by the name it is started under).
#
# The server image (--server): also an empty DIR/state/buildstate, which the Dockerfile copies
# to /var/lib/buildstate owned by the server's user (65534): the default SQLite file's
# directory. It stays outside DIR/rootfs because a COPY sets one owner for all it copies.
#
#   scripts/image-rootfs.sh [--server] BINARY CA_BUNDLE DIR
set -eu
server=false
if [ "${1:-}" = --server ]; then
    server=true
    shift
fi
binary=$1 bundle=$2 dir=$3
root="$dir/rootfs"
rm -rf "$root" "$dir/state"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$binary" "$root/usr/local/bin/bldst"
chmod 0755 "$root/usr/local/bin/bldst"
cp "$bundle" "$root/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$root/etc/ssl/certs/ca-certificates.crt"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/nsswitch.conf"
if [ "$server" = true ]; then
    mkdir -p "$root/var/lib" "$dir/state/buildstate"
    chmod 0700 "$dir/state/buildstate"
else
    mkdir -p "$root/opt/resource"
    for name in check in out; do
        ln -s /usr/local/bin/bldst "$root/opt/resource/$name"
    done
    ln -s bldst "$root/usr/local/bin/bldst_cli"
    ln -s bldst "$root/usr/local/bin/bldst-action"
fi
