# One Dockerfile, two images:
#
#   docker build -t buildstate/bldst .                        # the client image (default, last stage)
#   docker build -t buildstate/server --target server .       # the REST server
#
# The client image is the Concourse resource type `state-store` (/opt/resource/check, in, out)
# and the GitHub Action's image: one static `bldst` without the server feature (so neither
# axum nor sqlx), the CA bundle, and nothing else — `FROM scratch`, no shell. It has no `USER`
# (GitHub runs Docker actions as root and needs to write the workspace it mounts) and an
# exec-form, absolute ENTRYPOINT: `bldst-action`, the GitHub Action (`action.yml`'s
# `runs.image: Dockerfile` builds this last stage). The same binary is every front end: it
# picks one by the name it is started under (check/in/out: the resource, called by path as
# Concourse does; bldst-action: the action; anything else: the command line, e.g.
# `docker run --entrypoint /usr/local/bin/bldst IMAGE build list`).
#
# The `rootfs` stage compiles and assembles the root filesystem with scripts/image-rootfs.sh;
# the final stage only copies it. The image test (tests/resource/image.rs) runs the same script
# on a locally built static binary and passes the result with `--build-context rootfs=DIR`,
# which stands in for this stage, so it builds the real final stage without pulling anything.

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS rootfs
WORKDIR /src
COPY . .
RUN scripts/build-static.sh > /tmp/binary \
 && scripts/image-rootfs.sh "$(cat /tmp/binary)" /etc/ssl/certs/ca-certificates.crt /

FROM ${RUST_IMAGE} AS server-build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin bldst

FROM docker.io/library/debian:bookworm-slim AS server
# Debian's security updates move ca-certificates' version: pinning it would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/buildstate \
 && chown 65534:65534 /var/lib/buildstate
COPY --from=server-build /src/target/release/bldst /usr/local/bin/bldst
# The default SQLite file lands here; mount a volume, or set DATABASE_URL to PostgreSQL.
WORKDIR /var/lib/buildstate
USER 65534:65534
ENV BUILDSTATE_LISTEN=0.0.0.0:8000
EXPOSE 8000
# No curl or shell needed: the binary asks its own /ready (https when BUILDSTATE_TLS_CERT is set).
HEALTHCHECK --interval=15s --timeout=6s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/bldst", "server", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/bldst"]
CMD ["server"]

FROM scratch AS client
COPY --from=rootfs /rootfs/ /
# GitHub passes `runs.args` as the command; the action reads its inputs from INPUT_* instead.
ENTRYPOINT ["/usr/local/bin/bldst-action"]
