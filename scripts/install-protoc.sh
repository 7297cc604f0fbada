#!/usr/bin/env bash
# Installs protoc, which the etcd client crate's build script needs (it compiles etcd's .proto
# files into Rust with prost), idempotently: Debian's protobuf-compiler, and libprotobuf-dev for
# the well-known types etcd's files import (google/protobuf/descriptor.proto, struct.proto), through
# apt-get, only if they are missing. Prints protoc's path on stdout.
#
# Env: PROTOC (use this binary if it exists; cargo build scripts read the same variable).
set -euo pipefail

log() { echo "install-protoc: $*" >&2; }
if [ -n "${PROTOC:-}" ] && [ -x "${PROTOC}" ]; then
  echo "$PROTOC"; exit 0
fi
well_known=/usr/include/google/protobuf/descriptor.proto
if command -v protoc >/dev/null 2>&1 && [ -f "$well_known" ]; then
  command -v protoc; exit 0
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { log "protoc is missing and installing it needs root (apt-get install protobuf-compiler)"; exit 1; }
  sudo=(sudo)
fi
log "installing protobuf-compiler and libprotobuf-dev with apt-get"
"${sudo[@]}" apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends protobuf-compiler libprotobuf-dev >&2
log "installed $(protoc --version)"
command -v protoc
