# Multi-stage build: a static (musl) binary built with the Rust toolchain,
# then a small Alpine runtime with CA certificates and a non-root user.

FROM rust:1-alpine AS builder
RUN apk add --no-cache musl-dev
WORKDIR /src
# Dependencies first, so that source edits don't rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && strip target/release/pikachu

FROM alpine:3.20
RUN apk add --no-cache ca-certificates tzdata wget \
    && addgroup -S appuser && adduser -S -G appuser -h /app appuser \
    && mkdir -p /app/logs /app/data \
    && chown -R appuser:appuser /app
COPY --from=builder /src/target/release/pikachu /usr/local/bin/pikachu
WORKDIR /app
USER appuser
# Logs (when log.file is set) and the state directory (checkpoint, dead letters).
VOLUME ["/app/logs", "/app/data"]
EXPOSE 8080
ENTRYPOINT ["pikachu"]
CMD ["-config", "/app/config.yaml"]
