# webex-push container image.
#
# Lives at the repository root (not under deploy/) because Heroku's heroku.yml builds
# always use the Dockerfile's own directory as the build context, and the build needs the
# whole workspace. Build it with:   docker build -t webex-push .
#
# Stage 1 compiles with the same command CI uses; stage 2 is a slim Debian runtime with
# only CA certificates and libpq (see docs/deployment.md for why not distroless).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libpq-dev is what diesel's Postgres backend links against; SQLite is bundled (built
# from source by libsqlite3-sys), so it only needs the C compiler the image already has.
# Unpinned on purpose: Debian stable only ships security fixes (hadolint DL3008 waived).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace: every member must be present for cargo to resolve it, and the
# migrations/ folder is embedded into the binary at compile time (embed_migrations!).
COPY . .
RUN cargo build --release --locked -p webex-push \
 && install -D -m 0755 target/release/webex-push /out/webex-push

FROM ${RUNTIME_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# ca-certificates: APNs (and Webex) are reached over TLS. libpq5: the Postgres client
# library the binary links to dynamically.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libpq5 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 webex-push \
 && useradd --system --uid 10001 --gid webex-push --home-dir /var/lib/webex-push \
      --shell /usr/sbin/nologin webex-push \
 && install -d -o webex-push -g webex-push -m 0750 /var/lib/webex-push
COPY --from=builder /out/webex-push /usr/local/bin/webex-push

# Without DATABASE_URL the server keeps an embedded SQLite file (webex-push.db) in its
# working directory: make that a directory the non-root user owns.
WORKDIR /var/lib/webex-push
USER 10001:10001
ENV HOST=0.0.0.0 \
    PORT=8080 \
    LOG_FORMAT=json
EXPOSE 8080

# No curl in the image and no `webex-push healthcheck` subcommand (yet): bash, which
# bookworm-slim ships, speaks just enough HTTP/1.0 over /dev/tcp to ask /healthz.
# Kubernetes and Heroku ignore HEALTHCHECK; it serves `docker run` and Compose.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PORT:-8080} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [ \"$status\" = 200 ]"]

ENTRYPOINT ["webex-push"]
CMD ["serve"]
