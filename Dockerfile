# syntax=docker/dockerfile:1
#
# One image for every Skald process: the orchestrator `skald`, the `ledger` and
# `payment` participants and the `psp-sim` provider simulator, all in
# /usr/local/bin, with the shipped saga definitions in /app/definitions.
# compose.yaml runs each service from it with its own command.
#
#   docker build -t skald:local .
#   docker run --rm skald:local skald --help
#
# Needs BuildKit (the default builder of Docker 23 and later) for the cache
# mounts below.

# ---- build ------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The crates.io registry and target/ live in BuildKit cache mounts: a rebuild
# after a source change downloads nothing and recompiles only what changed.
# target/ is a cache, not a layer, so the binaries are copied out in this step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p skald-cli -p ledger -p payment \
    && mkdir -p /out \
    && cp target/release/skald target/release/ledger target/release/payment \
          target/release/psp-sim /out/

# ---- run --------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# ca-certificates for TLS to NATS, PostgreSQL or a real payment provider; curl
# for the health checks in compose.yaml.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 skald \
    && useradd --system --uid 10001 --gid skald --home-dir /var/lib/skald \
       --create-home --shell /usr/sbin/nologin skald \
    && mkdir -p /var/lib/skald/bus /var/lib/skald/tokens \
    && chown skald:skald /var/lib/skald/bus /var/lib/skald/tokens
COPY --from=builder /out/ /usr/local/bin/
COPY sagas/definitions/ /app/definitions/
ENV SKALD_DEFINITIONS=/app/definitions
# The working directory is the user's own, so the SQLite defaults
# (skald.db, ledger.db, payment.db) work when no DATABASE_URL is given.
WORKDIR /var/lib/skald
USER skald:skald
# 8080: the orchestrator's HTTP API (SKALD_HTTP_ADDR); 7070: psp-sim.
EXPOSE 8080 7070
CMD ["skald", "serve"]
