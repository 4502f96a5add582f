# syntax=docker/dockerfile:1
# One image with the services' binaries (smartflow-agent, smartflow-notification,
# smartflow-userauth) and the all-in-one `smartflow`, built from this workspace; compose picks
# the binary with `command`. The cargo registry and the target directory are build caches, so a
# rebuild compiles only what changed.

FROM rust:1-bookworm AS build
# librdkafka is compiled from source by rdkafka-sys (make, a C/C++ compiler; in the image).
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p smartflow-agent -p smartflow-notification -p smartflow-userauth -p smartflow-cli \
    && mkdir -p /out \
    && cp target/release/smartflow-agent target/release/smartflow-notification \
          target/release/smartflow-userauth target/release/smartflow /out/

FROM debian:bookworm-slim
# curl for the compose health checks (GET /healthz); ca-certificates for Feishu's HTTPS webhooks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/smartflow --create-home smartflow
COPY --from=build /out/ /usr/local/bin/
USER smartflow
WORKDIR /var/lib/smartflow
# The services default to loopback; compose sets SMARTFLOW_HTTP_ADDR=0.0.0.0:PORT.
CMD ["smartflow"]
