# One small runtime image with all four binaries: gateway, watcher (spawned by the gateway, found
# next to it), registrator and serviceweb. docker-compose.yml picks the binary per service with
# `command:`.
#
# Where the binaries come from (build-arg BINARIES):
#   builder   (default) compiled here in ${RUST_IMAGE}; needs a container registry and Rust's
#             package registry.
#   prebuilt  copied from ${PREBUILT_DIR} in the build context, i.e. `cargo build --release` on the
#             host (same glibc as the runtime: Debian 12). The offline path scripts/build-images.sh takes.
# BuildKit (DOCKER_BUILDKIT=1, docker buildx, Compose v2) builds only the stages the target needs,
# so the unused path is never pulled or compiled. The legacy builder builds every stage; that
# works for BINARIES=builder (the prebuilt stage tolerates missing binaries) but not offline.
#
# No HEALTHCHECK here: the image serves four different roles (registrator has no port), so
# docker-compose.yml declares a check per service, using bash's /dev/tcp (no curl in the image).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARIES=builder

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# protoc and the well-known .proto files, for the etcd client crate's build script.
COPY scripts/install-protoc.sh scripts/
RUN bash scripts/install-protoc.sh
# Dependency layer: manifests plus empty targets, so editing sources does not rebuild dependencies.
COPY Cargo.toml Cargo.lock ./
COPY common/Cargo.toml common/
COPY consul/Cargo.toml consul/
COPY etcd/Cargo.toml etcd/
COPY watcher/Cargo.toml watcher/
COPY gateway/Cargo.toml gateway/
COPY serviceweb/Cargo.toml serviceweb/
COPY registrator/Cargo.toml registrator/
COPY tests/Cargo.toml tests/
RUN for c in common consul etcd watcher gateway registrator tests; do \
      mkdir -p $c/src && echo '//! placeholder' > $c/src/lib.rs; done \
 && for c in watcher gateway serviceweb registrator; do \
      mkdir -p $c/src && echo 'fn main() {}' > $c/src/main.rs; done \
 && cargo build --release --locked -p gateway -p watcher -p registrator -p serviceweb \
 && rm -rf */src
COPY . .
# COPY keeps the context's mtimes, which may be older than the placeholder build: touch so cargo
# rebuilds the workspace crates for real.
RUN find common consul etcd watcher gateway serviceweb registrator tests -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p gateway -p watcher -p registrator -p serviceweb \
 && mkdir -p /out \
 && cp target/release/gateway target/release/watcher target/release/registrator target/release/serviceweb /out/

FROM scratch AS prebuilt
ARG PREBUILT_DIR=target/release
# Cargo.toml always exists, so this COPY succeeds even when the legacy builder runs this stage
# without prebuilt binaries (BINARIES=builder); the runtime stage checks that all four arrived.
COPY Cargo.toml ${PREBUILT_DIR}/gatewa[y] ${PREBUILT_DIR}/watche[r] ${PREBUILT_DIR}/registrato[r] ${PREBUILT_DIR}/servicewe[b] /out/

FROM ${BINARIES} AS bins

FROM ${RUNTIME_IMAGE} AS runtime
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=bins /out/gateway /out/watcher /out/registrator /out/serviceweb /usr/local/bin/
RUN for b in gateway watcher registrator serviceweb; do \
      "/usr/local/bin/$b" --version >/dev/null || { echo "missing or broken binary: $b" >&2; exit 1; }; done
USER 10001:10001
ENV RUST_LOG=info
CMD ["gateway", "--listen", "0.0.0.0:3000", "--admin-listen", "0.0.0.0:8081"]
