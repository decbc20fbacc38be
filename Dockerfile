# nodedns: a static (musl) binary on a distroless base, no shell, no package manager.
#   docker build -t registry.example.com/nodedns:0.1.0 .
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ...

FROM --platform=$BUILDPLATFORM rust:1-bookworm AS build
ARG TARGETARCH
RUN case "$TARGETARCH" in \
        amd64) echo x86_64-unknown-linux-musl > /rust-target ;; \
        arm64) echo aarch64-unknown-linux-musl > /rust-target ;; \
        *) echo "unsupported TARGETARCH=$TARGETARCH" >&2; exit 1 ;; \
    esac \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends musl-tools \
 && if [ "$TARGETARCH" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then \
        apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu; fi \
 && rustup target add "$(cat /rust-target)"
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target "$(cat /rust-target)" \
 && cp "target/$(cat /rust-target)/release/nodedns" /nodedns

FROM gcr.io/distroless/static-debian12
COPY --from=build /nodedns /nodedns
# Root inside the container, but the DaemonSet drops every capability except NET_ADMIN
# and NET_BIND_SERVICE (see daemonset/README.md).
USER 0
ENTRYPOINT ["/nodedns"]
CMD ["--config", "/etc/nodedns/nodedns.toml"]
