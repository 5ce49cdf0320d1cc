# The client image: `bldst` alone, built without the `server` feature, so neither axum nor sqlx
# is in it. It is both the Concourse resource type image and the GitHub Action image; their
# entrypoints (resource/, action/) are added by their own issues.
#
#   docker build -t buildstate/bldst .
#   docker run --rm -e BUILDSTATE_API_URL -e BUILDSTATE_API_TOKEN buildstate/bldst build list

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --no-default-features --bin bldst

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/bldst /usr/local/bin/bldst
# The framework guide's pipelines call it `bldst_cli`.
RUN ln -s /usr/local/bin/bldst /usr/local/bin/bldst_cli
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/bldst"]
CMD ["--help"]
