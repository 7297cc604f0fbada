#!/usr/bin/env bash
# Installs the Consul binary the tests and demo use, idempotently, into a project-local directory,
# and prints its path on stdout.
#
# Debian 12 ships no Consul; Debian 11 (bullseye) shipped consul 1.8.7. We fetch that .deb from
# the Debian archive this machine's apt is configured with (scripts/lib/apt-mirror.sh) through a
# temporary apt source list for bullseye (nothing is added to the system's sources) and extract
# /usr/bin/consul from it. No package is installed.
#
# Env: CONSUL_BIN (use this binary if it exists), CONSUL_INSTALL_DIR (default: <repo>/.tools),
#   DEBIAN_MIRROR (the archive's base URI; default: derived from /etc/apt).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest_dir=${CONSUL_INSTALL_DIR:-$repo/.tools}
dest=$dest_dir/consul

if [ -n "${CONSUL_BIN:-}" ] && [ -x "${CONSUL_BIN}" ]; then
  echo "$CONSUL_BIN"; exit 0
fi
if [ -x "$dest" ] && "$dest" version >/dev/null 2>&1; then
  echo "$dest"; exit 0
fi

log() { echo "install-consul: $*" >&2; }
# shellcheck source-path=SCRIPTDIR source=lib/apt-mirror.sh
. "$repo/scripts/lib/apt-mirror.sh"
mirror=$(debian_mirror) || { log "cannot tell which Debian archive to fetch consul from"; exit 1; }
mkdir -p "$dest_dir"
# shellcheck source-path=SCRIPTDIR source=lib/deb-binary.sh
. "$repo/scripts/lib/deb-binary.sh"
deb_binary consul "$dest" "$mirror" bullseye
log "installed $("$dest" version | sed -n 1p) at $dest"
echo "$dest"
