#!/usr/bin/env sh
# Assembles the client image's whole root filesystem in DIR/rootfs: the static `bldst` at
# /usr/local/bin/bldst, the Concourse resource's /opt/resource/{check,in,out}, the GitHub
# Action's entrypoint /usr/local/bin/bldst-action and `bldst_cli` as links to it (the binary
# picks its front end by the name it is started under), and the CA
# bundle at /etc/ssl/certs/ca-certificates.crt. The Dockerfile's `rootfs` stage runs it; the
# image test runs it on a locally built binary and hands DIR to `podman build` as that stage,
# so the test's image is the Dockerfile's final stage over the same layout.
#
#   scripts/image-rootfs.sh BINARY CA_BUNDLE DIR
set -eu
binary=$1 bundle=$2 dir=$3
root="$dir/rootfs"
rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/opt/resource" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$binary" "$root/usr/local/bin/bldst"
chmod 0755 "$root/usr/local/bin/bldst"
for name in check in out; do
    ln -s /usr/local/bin/bldst "$root/opt/resource/$name"
done
ln -s bldst "$root/usr/local/bin/bldst_cli"
ln -s bldst "$root/usr/local/bin/bldst-action"
cp "$bundle" "$root/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$root/etc/ssl/certs/ca-certificates.crt"
