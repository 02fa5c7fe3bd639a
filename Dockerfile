# syntax=docker/dockerfile:1
#
# One image for every Pygmy node, for a host that can pull from a registry
# (rust and debian images). The role of a container comes from its
# arguments or environment, e.g. PYGMY_CONFIG=/etc/pygmy/compose.toml
# PYGMY_NODE=catalog-a (see compose.yaml and docs/operations.md).
#
# With no registry, deploy/build-image.sh builds the same binary on the
# host, statically linked, into an image FROM scratch: that is the image
# compose.yaml and the CI use.

# Build: the release binary of pygmy-server.
FROM rust:1-bookworm AS build
WORKDIR /src
# Copy only the workspace manifest, the lock file and the crates, so that a
# local target/, data/ or logs/ never reaches the image.
COPY Cargo.toml Cargo.lock ./
COPY pygmy-core pygmy-core
COPY pygmy-client pygmy-client
COPY pygmy-server pygmy-server
# The workspace names these members too.
COPY examples examples
COPY bench/baselines bench/baselines
# The OpenAPI documents the nodes serve are compiled in.
COPY docs/openapi docs/openapi
# The cache mounts keep the registry and the build directory between builds.
# The binary is copied out in the same step, because target/ is a cache
# mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pygmy-server \
    && cp target/release/pygmy-server /pygmy-server

# Run: the binary alone on a slim Debian. SQLite is compiled into the binary,
# and the nodes speak plain HTTP, so no extra library is needed.
FROM debian:bookworm-slim
# A new named volume mounted on /var/lib/pygmy takes this directory's owner,
# so the unprivileged user can write there.
RUN useradd --system --user-group --no-create-home --home-dir /var/lib/pygmy pygmy \
    && mkdir -p /var/lib/pygmy \
    && chown pygmy:pygmy /var/lib/pygmy
# At /pygmy-server, as in the image FROM scratch, so that compose.yaml's
# health check runs in either.
COPY --from=build /pygmy-server /pygmy-server
USER pygmy
# mimalloc commits its arenas' memory lazily: a frontend at 1,000
# connections holds 35 MiB with it, 65 without (docs/scaling.md).
ENV MIMALLOC_ARENA_EAGER_COMMIT=0
# Relative `data_dir` and `log_dir` paths resolve here. Mount a volume on it
# to keep the data.
WORKDIR /var/lib/pygmy
# The default ports: frontend 8010, then the replicas 8011 to 8016.
EXPOSE 8010-8016
# With no arguments, the binary runs the embedded topology on 127.0.0.1,
# which only the container itself can reach. Pass --config and --node.
ENTRYPOINT ["/pygmy-server"]
