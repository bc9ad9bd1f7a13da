# syntax=docker/dockerfile:1
#
# The Custard server (API, web UI, agent hub), one replica per container.
# Configuration comes only from the environment (CUSTARD_STORE_URL,
# CUSTARD_NATS_URL, CUSTARD_PUBLIC_URL, ...: see deploy/README.md); the image
# holds no secrets.
#
# Build from the repository root (the whole workspace is the build context):
#   docker build -f deploy/server.Dockerfile -t custard-server .

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

# ---- build ------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# .dockerignore keeps target/, .git/ and local data out of the context.
COPY . .
# Cache mounts keep the registry and compiled dependencies between builds, so a
# source change recompiles only the workspace crates. The binary is copied out
# because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release -p custard-server --locked \
    && install -D -m 0755 target/release/custard-server /out/custard-server

# ---- run --------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# CA certificates: the model endpoint, SMTP and a PostgreSQL store over TLS are
# verified against the system roots. curl: the health check.
# Unpinned on purpose: the release's current packages are the ones to trust.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 custard \
    && useradd --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin custard \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/custard
COPY --from=builder /out/custard-server /usr/local/bin/custard-server

LABEL org.opencontainers.image.title="custard-server" \
      org.opencontainers.image.description="Custard server: API, web UI and agent hub; run several behind a balancer" \
      org.opencontainers.image.licenses="Apache-2.0"

# Listen on every interface of the container (the default, 127.0.0.1, is
# unreachable from outside it). The data dir holds this replica's own files:
# the email outbox when CUSTARD_SMTP_URL is unset, and with the default SQLite
# store (one server only) the store and the JWT secret.
ENV CUSTARD_BIND=0.0.0.0:8000 \
    CUSTARD_DATA_DIR=/var/lib/custard

USER 10001:10001
WORKDIR /var/lib/custard
EXPOSE 8000

# /health: the process answers (on the port of CUSTARD_BIND). A balancer that polls should use /ready
# (503 while the store or NATS is unreachable, or while shutting down).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8000/health"]

# SIGTERM drains: new connections are refused at once, requests finish (10 s at
# most), then agents are told to reconnect elsewhere (close code 1012, 12 s at
# most). Give the container more than that before SIGKILL (compose:
# stop_grace_period: 30s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["custard-server"]
