# tcphub container image: a release build on the official Rust image, run as a
# non-root user on a small Debian runtime. Base images are build arguments so a
# mirror or a pinned digest can be swapped in:
#   docker build --build-arg RUST_IMAGE=rust:1.89-bookworm -t tcphub .
#
# The runtime is debian:bookworm-slim rather than distroless or scratch: the
# binary links glibc dynamically, and the Rust image is bookworm-based, so the
# same glibc is guaranteed at run time; the slim image also keeps a shell and
# `useradd` for the non-root user and for debugging a live container, at about
# 75 MB.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# Reduces the build context to what decides the dependency build, so that the
# expensive dependency layer below is reused until Cargo.toml, Cargo.lock or the
# cargo configuration change. Kept: the manifests, `.cargo/` and `vendor/` (an
# offline build made with `cargo vendor` works unchanged), and every Rust source
# path, each replaced by an empty program so that all targets the manifest names
# still resolve.
FROM ${RUST_IMAGE} AS dependency-skeleton
WORKDIR /skeleton
COPY . .
RUN printf '//! Dependency-layer stub.\nfn main() {}\n' > /tmp/bin-stub.rs \
 && printf '//! Dependency-layer stub.\n' > /tmp/lib-stub.rs \
 && find . -mindepth 1 \( -path ./vendor -o -path ./.cargo \) -prune \
        -o -type f ! -name Cargo.toml ! -name Cargo.lock ! -name '*.rs' -exec rm -f {} + \
 && find . \( -path ./vendor -o -path ./.cargo \) -prune \
        -o -type f -name '*.rs' -exec cp /tmp/bin-stub.rs {} \; \
 && find . \( -path ./vendor -o -path ./.cargo \) -prune \
        -o -type f -name lib.rs -exec cp /tmp/lib-stub.rs {} \; \
 && find . -mindepth 1 -type d -empty ! -path './vendor*' ! -path './.cargo*' -delete

FROM ${RUST_IMAGE} AS build
WORKDIR /usr/src/tcphub
COPY --from=dependency-skeleton /skeleton/ ./
RUN cargo build --release --locked
COPY . .
# The real sources may be older than the stub artifacts, and cargo decides
# freshness by modification time, so the crate's own artifacts are cleaned.
RUN cargo clean --release --locked --package tcphub \
 && cargo build --release --locked

FROM ${RUNTIME_IMAGE}
RUN useradd --system --user-group --uid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tcphub \
 && mkdir /data && chown 10001:10001 /data
COPY --from=build /usr/src/tcphub/target/release/tcphub /usr/local/bin/tcphub
# A numeric user lets orchestrators verify "run as non-root" without reading /etc/passwd.
USER 10001:10001
# Inside a container the HTTP API must listen beyond loopback to be reachable,
# and tcphub refuses a non-loopback API without a token: every `docker run`
# passes TCPHUB_API_TOKEN (see docs/DEPLOY.md). Logs are one JSON object per
# line for log collectors. `docker stop` kills after 10 s by default, so the
# drain gets 8 s and the hub still says bye and exits 0 on its own.
ENV TCPHUB_TCP_ADDR=0.0.0.0:9000 \
    TCPHUB_HTTP_ADDR=0.0.0.0:8080 \
    TCPHUB_LOG_FORMAT=json \
    TCPHUB_SHUTDOWN_GRACE=8 \
    TCPHUB_DATA_DIR=/data
# The mailbox database: stored messages outlive the container on this volume.
VOLUME /data
EXPOSE 9000 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["tcphub", "healthcheck"]
ENTRYPOINT ["tcphub"]
