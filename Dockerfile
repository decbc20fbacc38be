# nodedns: one static (musl) binary, /nodedns, on an empty base: no shell, no package
# manager, no libc, nothing to patch but nodedns itself.
#
#   docker build -t registry.example.com/nodedns:0.1.0 .            # release build, amd64
#   podman build -t nodedns:dev .                                    # the same with podman
#
# Platforms: linux/amd64 is built and run by CI. linux/arm64 cross-builds with Debian's
# aarch64 gcc as linker and C compiler (mimalloc is C): the release workflow
# (.github/workflows/release.yml) builds both with `docker buildx build --platform
# linux/amd64,linux/arm64`; it is not run in CI here.
#
# CI does not compile twice: it builds the musl binary in the profile its tests use and
# hands it in with `--target prebuilt` and a context holding only that file (.ci/image-check).

# The release build, on the build machine's platform, for the image's.
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
        apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross; fi \
 && rustup target add "$(cat /rust-target)"
# The C parts (mimalloc) of an arm64 build on an amd64 machine: Debian has no aarch64 musl-gcc,
# so the cross gcc compiles them (they call no libc function glibc and musl disagree on) and
# links the static binary.
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
    AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target "$(cat /rust-target)" \
 && cp "target/$(cat /rust-target)/release/nodedns" /nodedns

# A binary built elsewhere (CI): `--target prebuilt`, the context holding `nodedns`.
FROM scratch AS prebuilt
COPY nodedns /nodedns
# Root inside the container, but the DaemonSet drops every capability except NET_ADMIN
# and NET_BIND_SERVICE (see daemonset/README.md).
USER 0
ENTRYPOINT ["/nodedns"]
CMD ["--config", "/etc/nodedns/nodedns.toml"]

# The default: the release build above.
FROM scratch
COPY --from=build /nodedns /nodedns
USER 0
ENTRYPOINT ["/nodedns"]
CMD ["--config", "/etc/nodedns/nodedns.toml"]
