# syntax=docker/dockerfile:1
#
# One image for every role: `copiste worker`, `copiste scheduler`,
# `copiste serve`, `copiste migrate` and the admin commands. Build it with
# `docker build -t copiste .`; compose.yaml runs the whole stack and
# docs/containers.md explains both.
#
# Three build stages around cargo-chef, so that the dependencies are
# compiled in a layer of their own, reused until Cargo.toml or Cargo.lock
# change: an edit to src/ recompiles only copiste itself.

# The Rust of rust-toolchain.toml, to the patch version (scripts/check-container
# fails when the two disagree).
FROM rust:1.95.0-trixie AS chef
# rust-toolchain.toml also asks for rustfmt and clippy, which a release build
# does not use: naming the toolchain keeps rustup from downloading them.
ENV RUSTUP_TOOLCHAIN=1.95.0
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# The recipe: the manifests, the lock file and the targets' skeleton.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
# Query macros use the committed .sqlx/ cache: no database at build time.
ENV SQLX_OFFLINE=true
COPY --from=planner /src/recipe.json recipe.json
# The dependencies alone: this layer is cached while the recipe is unchanged.
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin copiste
COPY . .
RUN cargo build --release --locked --bin copiste

# The same Debian release as the build stage, so the glibc matches.
FROM debian:13-slim AS runtime
# ca-certificates for TLS to S3 and the export targets. DL3008 (pin apt
# package versions) is ignored: the base image's tag already fixes the
# Debian release, and Debian's archive keeps only the current version of a
# package, so a pinned version would break the build at the next security
# update instead of bringing it in.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 copiste \
    && useradd --system --uid 10001 --gid copiste --home-dir /var/lib/copiste \
        --create-home --shell /usr/sbin/nologin copiste
COPY --from=build /src/target/release/copiste /usr/local/bin/copiste
# Owned by root: the service reads its configuration and schedules but
# cannot change them.
COPY config/default.toml /etc/copiste/default.toml
COPY jobs/ /etc/copiste/jobs/
# The configuration file and the schedules are read from /etc/copiste
# whatever the working directory (COPISTE_CONFIG is --config); every
# setting can still be overridden by its COPISTE_* variable.
ENV COPISTE_CONFIG=/etc/copiste/default.toml \
    COPISTE_SCHEDULER__DIR=/etc/copiste/jobs
# Numeric, so that an orchestrator can check the user is not root.
USER 10001:10001
# The local store (storage.kind = "local", root ./data/objects) lands here.
WORKDIR /var/lib/copiste
# `serve --listen 0.0.0.0:8080`, or `worker`/`scheduler` with
# `--metrics-listen 0.0.0.0:8080`: every long-running role answers
# /healthz on 8080, which the health check asks. A one-shot command
# (migrate, an admin command) ends before the first check.
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["copiste", "probe", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["copiste"]
CMD ["worker", "--metrics-listen", "0.0.0.0:8080"]
