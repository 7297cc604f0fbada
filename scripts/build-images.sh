#!/usr/bin/env bash
# Builds, without any container registry, the images docker-compose.yml runs:
#   1. base    a minimal Debian 12 rootfs (debootstrap --variant=minbase) from the Debian archive
#              this machine's apt is configured with (scripts/lib/apt-mirror.sh), `docker import`ed;
#              the rootfs tarball is cached under .cache/ so a pruned image re-imports in seconds.
#   2. consul  the local stand-in for hashicorp/consul (docker/consul/) with scripts/install-consul.sh's binary.
#   3. project `cargo build --release` on the host, then the root Dockerfile with BINARIES=prebuilt
#              and the base image as runtime (BuildKit, so the unused rust builder stage is skipped).
# Idempotent: existing images are reused; the project image is rebuilt from Docker's layer cache,
# so it changes exactly when the binaries do.
#
# Usage: scripts/build-images.sh [all|base|consul|project]      (default: all)
# Env (with defaults): BASE_IMAGE=consul-gateway-base:bookworm  CONSUL_LOCAL_IMAGE=consul-gateway-consul:local
#   PROJECT_IMAGE=consul-gateway:local  CACHE_DIR=<repo>/.cache
#   DEBIAN_MIRROR=<the archive URI from /etc/apt> (an explicit archive base URI overrides the lookup)
#   SKIP_CARGO=1 (use the binaries already in target/release)
# Prints `export ...` lines for docker-compose.yml's image variables on stdout; logs go to stderr.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${CACHE_DIR:-$repo/.cache}
BASE_IMAGE=${BASE_IMAGE:-consul-gateway-base:bookworm}
CONSUL_LOCAL_IMAGE=${CONSUL_LOCAL_IMAGE:-consul-gateway-consul:local}
PROJECT_IMAGE=${PROJECT_IMAGE:-consul-gateway:local}
BINARIES=(gateway watcher registrator serviceweb)
# shellcheck source-path=SCRIPTDIR source=lib/apt-mirror.sh
. "$repo/scripts/lib/apt-mirror.sh"

log() { echo "build-images: $*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
# After a rebuild the previous image is left untagged: remove it so repeated runs do not pile up
# images (fails harmlessly while a container still uses it).
drop_replaced() {
  local old=$1 tag=$2
  if [ -n "$old" ] && [ "$old" != "$(image_id "$tag")" ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
}

# debootstrap is a Debian package; fresh machines (CI) may not have it yet.
ensure_debootstrap() {
  command -v debootstrap >/dev/null && return
  if [ "$(id -u)" != 0 ]; then
    log "debootstrap missing: run 'apt-get install debootstrap' as root"
    exit 1
  fi
  log "installing debootstrap from Debian's archive"
  apt-get install -y -q debootstrap >&2 || { apt-get update -q >&2 && apt-get install -y -q debootstrap >&2; }
}

build_base() {
  if have_image "$BASE_IMAGE"; then
    log "base: $BASE_IMAGE exists"
    return
  fi
  local tarball=$cache/bookworm-minbase.tar
  if [ ! -s "$tarball" ]; then
    local mirror
    mirror=$(debian_mirror) || { log "base: cannot tell which Debian archive to debootstrap from"; exit 1; }
    ensure_debootstrap
    local rootfs=$cache/rootfs.tmp
    rm -rf "$rootfs" "$tarball.tmp"
    mkdir -p "$cache"
    log "base: debootstrap bookworm (minbase) from $mirror (a few minutes, once)"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >&2
    # An image has no use for the package cache or lists; they are most of the size otherwise.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "base: importing $tarball as $BASE_IMAGE"
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    "$tarball" "$BASE_IMAGE" >/dev/null
}

build_consul() {
  local consul_bin
  consul_bin=$("$repo/scripts/install-consul.sh")
  local ctx=$cache/consul-image
  mkdir -p "$ctx"
  cp "$repo/docker/consul/Dockerfile" "$repo/docker/consul/entrypoint.sh" "$ctx/"
  # cp -p keeps the mtime stable so Docker's cache recognises an unchanged binary.
  cp -p "$consul_bin" "$ctx/consul"
  log "consul: building $CONSUL_LOCAL_IMAGE"
  local old
  old=$(image_id "$CONSUL_LOCAL_IMAGE")
  DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$CONSUL_LOCAL_IMAGE" "$ctx" >/dev/null
  drop_replaced "$old" "$CONSUL_LOCAL_IMAGE"
}

# A docker CLI that can build with BuildKit: `docker buildx`, or a pre-23 CLI whose built-in
# BuildKit client DOCKER_BUILDKIT=1 enables (Debian 12's own Docker package, 20.10, ships one in
# /usr/bin).
buildkit_build() {
  if docker buildx version >/dev/null 2>&1; then
    docker buildx build --load "$@"
    return
  fi
  local cli
  for cli in docker /usr/bin/docker; do
    if command -v "$cli" >/dev/null && DOCKER_BUILDKIT=1 "$cli" build --help >/dev/null 2>&1; then
      DOCKER_BUILDKIT=1 "$cli" build "$@"
      return
    fi
  done
  log "no BuildKit-capable docker CLI (install docker-buildx, or use a docker CLI older than 23)"
  return 1
}

build_project() {
  local target_dir=${CARGO_TARGET_DIR:-$repo/target}
  if [ -z "${SKIP_CARGO:-}" ]; then
    log "project: cargo build --release (${BINARIES[*]})"
    (cd "$repo" && cargo build --release --locked $(printf -- '-p %s ' "${BINARIES[@]}") >&2)
  fi
  # The Docker build context is the repository; binaries elsewhere are staged into .cache/.
  local rel
  case "$target_dir/release" in
    "$repo"/*) rel=${target_dir#"$repo"/}/release ;;
    *)
      rel=.cache/prebuilt
      mkdir -p "$repo/$rel"
      for b in "${BINARIES[@]}"; do cp -p "$target_dir/release/$b" "$repo/$rel/"; done
      ;;
  esac
  for b in "${BINARIES[@]}"; do
    [ -x "$repo/$rel/$b" ] || { log "missing $rel/$b"; exit 1; }
  done
  log "project: building $PROJECT_IMAGE from the Dockerfile (BINARIES=prebuilt, runtime $BASE_IMAGE)"
  local old
  old=$(image_id "$PROJECT_IMAGE")
  buildkit_build -q \
    --build-arg BINARIES=prebuilt \
    --build-arg "PREBUILT_DIR=$rel" \
    --build-arg "RUNTIME_IMAGE=$BASE_IMAGE" \
    -t "$PROJECT_IMAGE" "$repo" >/dev/null
  drop_replaced "$old" "$PROJECT_IMAGE"
}

what=${1:-all}
case "$what" in
  base) build_base ;;
  consul) build_base; build_consul ;;
  project) build_base; build_project ;;
  all) build_base; build_consul; build_project ;;
  *) log "usage: $0 [all|base|consul|project]"; exit 2 ;;
esac
log "done ($what)"
echo "export CONSUL_IMAGE=$CONSUL_LOCAL_IMAGE GATEWAY_IMAGE=$PROJECT_IMAGE"
