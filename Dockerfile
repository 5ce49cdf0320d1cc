# One Dockerfile, two images:
#
#   docker build -t buildstate/bldst .                        # the client image (default, last stage)
#   docker build -t buildstate/server --target server .       # the REST server
#
# Both are `FROM scratch`: one static `bldst` (scripts/build-static.sh), the CA bundle, /tmp,
# and nothing else — no shell, no package manager, no dynamic loader.
#
# The client image is the Concourse resource type `state-store` (/opt/resource/check, in, out)
# and the GitHub Action's image: `bldst` without the server feature (so neither axum nor sqlx).
# It has no `USER` (GitHub runs Docker actions as root and needs to write the workspace it
# mounts) and an exec-form, absolute ENTRYPOINT: `bldst-action`, the GitHub Action (the
# published `action.yml` runs this stage's released image; this repository's CI builds it from
# source through .github/actions/from-source/action.yml). The same binary is every
# front end: it picks one by the name it is started under (check/in/out: the resource, called
# by path as Concourse does; bldst-action: the action; anything else: the command line, e.g.
# `docker run --entrypoint /usr/local/bin/bldst IMAGE build list`).
#
# The server image runs `bldst server` (with SQLite compiled in) as user 65534, which owns
# /var/lib/buildstate, the working directory where the default SQLite file lands.
#
# Each `*rootfs` stage compiles and assembles its image's root filesystem with
# scripts/image-rootfs.sh; the final stages only copy it. The image tests
# (tests/resource/image.rs, tests/action/image.rs, tests/api/server_image.rs) run the same
# scripts on locally built static binaries and pass the result with
# `--build-context rootfs=DIR` (or `server-rootfs=DIR`), which stands in for that stage, so they
# build the real final stages without pulling anything. The release workflow does the same
# with the binaries it publishes (scripts/release-images.sh).

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

# Two caches (BENCHMARKS.md, "The Dockerfile's build caches"):
#   - cargo-chef: the dependencies compile in a layer of their own, keyed by a recipe of the
#     manifests and Cargo.lock, so a change to the workspace's sources alone rebuilds only the
#     workspace's crates; it works wherever layers are kept (a registry or GHA layer cache too);
#   - sccache in a cache mount: cargo-chef rebuilds every workspace crate after `COPY . .`, so
#     the compilations of those crates are kept in /var/cache/sccache, and a crate whose
#     sources did not change comes out of it; it works on builders that keep cache mounts
#     (BuildKit, buildah/podman), and a builder without one simply compiles.
# Debian's sccache: no compile of our own, and its version is pinned like every package.
# The releases do not build here: they build the binaries on the runners and assemble the
# final stages from them (release.yml).
FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78 \
 && apt-get update \
 && apt-get install -y --no-install-recommends sccache=0.4.0~~pre6-1+b1 \
 && rm -rf /var/lib/apt/lists/*
ENV SCCACHE_DIR=/var/cache/sccache
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path /recipe.json

# Each `*rootfs` stage cooks its kind's dependencies with the flags scripts/build-static.sh
# builds with (the cache is only reused when they match), then builds and assembles.
FROM chef AS rootfs
COPY --from=planner /recipe.json /recipe.json
COPY scripts/build-static.sh scripts/
RUN scripts/build-static.sh client --cook /recipe.json
COPY . .
# The sccache server is stopped at the end so that it has written the cache before the step
# ends; `sharing=locked`: the two rootfs stages take turns with the one cache directory.
RUN --mount=type=cache,target=/var/cache/sccache,sharing=locked \
    RUSTC_WRAPPER=sccache scripts/build-static.sh > /tmp/binary \
 && sccache --stop-server > /dev/null \
 && scripts/image-rootfs.sh "$(cat /tmp/binary)" /etc/ssl/certs/ca-certificates.crt /

FROM chef AS server-rootfs
COPY --from=planner /recipe.json /recipe.json
COPY scripts/build-static.sh scripts/
RUN scripts/build-static.sh server --cook /recipe.json
COPY . .
RUN --mount=type=cache,target=/var/cache/sccache,sharing=locked \
    RUSTC_WRAPPER=sccache scripts/build-static.sh server > /tmp/binary \
 && sccache --stop-server > /dev/null \
 && scripts/image-rootfs.sh --server "$(cat /tmp/binary)" /etc/ssl/certs/ca-certificates.crt /

FROM scratch AS server
COPY --from=server-rootfs /rootfs/ /
# The server's only writable directory besides /tmp. Owned by 65534 here, not in the stage:
# COPY keeps no owner from a local build context (the tests'), and a volume mounted there
# takes this owner on first use.
COPY --from=server-rootfs --chown=65534:65534 /state/ /var/lib/
# The default SQLite file (sqlite://buildstate.db) lands here; mount a volume, or set
# DATABASE_URL to PostgreSQL. Migrations are applied at start either way.
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
