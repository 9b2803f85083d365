# syntax=docker/dockerfile:1
# AgenticAI WebSocket gateway image.
#   docker build -t agenticai-websocket .
#   docker run --init -p 8080:8080 agenticai-websocket
# scripts/checks/run-image-smoke.sh runs the release binary the way this image does (same user kind, same ENV,
# same HEALTHCHECK command) on machines without a Docker engine.

# ---------------------------------------------------------------- builder
FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependency layer: build every dependency of the gateway against a placeholder main.rs so that
# this layer is reused until a manifest, Cargo.lock or a vendored crate (vendor/README.md) change.
# Cargo loads the whole workspace, so it needs the load generator's manifest too; `-p` builds the
# gateway alone, so the load generator's sources are never read and need no placeholder.
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml ./loadtest/
COPY vendor ./vendor
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && cargo build --release --locked -p agenticai-websocket \
    && rm -rf src target/release/.fingerprint/agenticai-websocket-* \
              target/release/deps/agenticai_websocket-* target/release/agenticai-websocket

# The real sources. The image's binary keeps its symbol table, so a panic's backtraces
# (RUST_BACKTRACE=1) name every function, but not its debug info (the line tables, about three
# quarters of the file): that goes to agenticai-websocket.debug, which the binary names
# (.gnu_debuglink) for gdb and addr2line, and which `docker build --target debug-symbols
# --output type=local,dest=symbols .` exports beside the image.
# GIT_COMMIT: the commit agenticai_ws_build_info reports (build.rs; the context has no .git).
# scripts/ops/deploy.sh passes the revision it tags the image with.
COPY build.rs ./
COPY src ./src
ARG GIT_COMMIT=unknown
RUN cargo build --release --locked -p agenticai-websocket \
    && objcopy --only-keep-debug target/release/agenticai-websocket /agenticai-websocket.debug \
    && objcopy --strip-debug --add-gnu-debuglink=/agenticai-websocket.debug \
               target/release/agenticai-websocket /agenticai-websocket

# ---------------------------------------------------------------- debug symbols (not in the image)
FROM scratch AS debug-symbols
COPY --from=builder /agenticai-websocket.debug /

# ---------------------------------------------------------------- runtime
FROM debian:bookworm-slim AS runtime

# ca-certificates: TLS to the AWS APIs and ElastiCache. bash (already in the base image) runs the
# HEALTHCHECK, so no curl is needed.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 agenticai \
    && useradd --system --uid 10001 --gid agenticai --home-dir /app --shell /usr/sbin/nologin agenticai \
    && mkdir -p /app/data \
    && chown -R agenticai:agenticai /app

COPY --from=builder /agenticai-websocket /usr/local/bin/agenticai-websocket

ENV WEBSOCKET_HOST=0.0.0.0 \
    WEBSOCKET_PORT=8080 \
    LOG_FORMAT=json \
    RUST_LOG=info \
    DATA_DIR=/app/data \
    PING_INTERVAL_SECS=25 \
    CLIENT_TIMEOUT_SECS=60 \
    DRAIN_SECONDS=10

WORKDIR /app
# A declared volume lets a read-only root file system (ECS ReadonlyRootFilesystem) keep DATA_DIR
# writable: Fargate copies this directory's ownership into the task's ephemeral volume.
VOLUME ["/app/data"]
USER 10001:10001
EXPOSE 8080

# On SIGTERM the server answers 503 on /ready, closes clients with 1012 over DRAIN_SECONDS,
# flushes its queues and exits 0 (the ECS stop timeout is 30 s: cloudformation/service.yaml).
STOPSIGNAL SIGTERM

# Liveness through bash's /dev/tcp: no HTTP client in the image. The same command is the container
# health check of the ECS task definition (cloudformation/service.yaml).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${WEBSOCKET_PORT:-8080} && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && grep -q '200 OK' <&3"]

ENTRYPOINT ["/usr/local/bin/agenticai-websocket"]
