# The meterd image, used by docker-compose.yml: `docker compose up --build`.
# Stages: chef (the toolchain and a pinned cargo-chef), planner (the dependency recipe from the
# manifests), build (dependencies cooked in their own layer, which a change to src/ does not
# invalidate, then meterd), and a slim runtime image that runs as an unprivileged user.
# .ci/check-files.sh lints this file with hadolint and parses every RUN of the build stages.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS chef
RUN cargo install --locked cargo-chef --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# Only the dependencies: this layer stays cached until Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin meterd \
    && install -m 0755 target/release/meterd /usr/local/bin/meterd

FROM debian:bookworm-slim AS runtime
# curl serves the compose healthcheck. Packages are not pinned to versions: bookworm's security
# updates replace them, and a pinned version disappears from the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 meterd \
    && useradd --system --uid 10001 --gid meterd --no-create-home --shell /usr/sbin/nologin meterd
COPY --from=build /usr/local/bin/meterd /usr/local/bin/meterd
USER 10001:10001
ENV METERD__HTTP__ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["meterd"]
CMD ["serve"]
