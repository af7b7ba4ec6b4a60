# Builds the meterd binary; used by docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/meterd /usr/local/bin/meterd

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/meterd /usr/local/bin/meterd
EXPOSE 8080
ENTRYPOINT ["meterd"]
CMD ["serve"]
