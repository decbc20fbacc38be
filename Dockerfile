# nodedns: one static (musl) binary, /nodedns, on an empty base: no shell, no package
# manager, no libc, nothing to patch but nodedns itself.
#
#   docker build -t registry.example.com/nodedns:0.1.0 .            # release build, amd64
#   podman build -t nodedns:dev .                                    # the same with podman
#
# Platforms: linux/amd64 and linux/arm64, each built natively on a machine of its own
# architecture. The static musl build compiles mimalloc's C with musl-gcc (Debian's
# musl-tools), which targets the machine's own architecture only: Debian ships no aarch64
# musl cross compiler, so an arm64 image is built on an arm64 machine (the release workflow,
# .github/workflows/release.yml, uses an arm64 runner; buildx with an arm64 node or QEMU
# emulation works too), and a cross build stops with a message. CI here builds and runs
# linux/amd64 only.
#
# CI does not compile twice: it builds the musl binary in the profile its tests use and
# hands it in with `--target prebuilt` and a context holding only that file (.ci/image-check).

# The release build, on a machine of the image's architecture.
FROM rust:1-bookworm AS build
ARG TARGETARCH
RUN case "$TARGETARCH" in \
        amd64) echo x86_64-unknown-linux-musl > /rust-target; machine=x86_64 ;; \
        arm64) echo aarch64-unknown-linux-musl > /rust-target; machine=aarch64 ;; \
        *) echo "unsupported TARGETARCH=$TARGETARCH" >&2; exit 1 ;; \
    esac \
 && if [ "$(uname -m)" != "$machine" ]; then \
        echo "building $TARGETARCH on $(uname -m): musl-gcc targets the build machine only; build on a $machine machine" >&2; \
        exit 1; fi \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends musl-tools \
 && rustup target add "$(cat /rust-target)"
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
