# One image for every role: `copiste worker`, `copiste scheduler`,
# `copiste serve`, `copiste migrate`, admin commands.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Query macros use the committed .sqlx/ cache: no database at build time.
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked --bin copiste

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/copiste --create-home copiste
COPY --from=build /src/target/release/copiste /usr/local/bin/copiste
COPY config/default.toml /etc/copiste/default.toml
COPY jobs /etc/copiste/jobs
# The configuration file and the schedules are read from /etc/copiste
# whatever the working directory (COPISTE_CONFIG is --config).
ENV COPISTE_CONFIG=/etc/copiste/default.toml \
    COPISTE_SCHEDULER__DIR=/etc/copiste/jobs
USER copiste
WORKDIR /var/lib/copiste
ENTRYPOINT ["copiste"]
CMD ["worker"]
