#!/usr/bin/env bash
# Installs the etcd server the etcd end-to-end tests start, idempotently, into a project-local
# directory, and prints its path on stdout.
#
# Debian 12 (bookworm) ships etcd 3.4 as the package etcd-server. We fetch that .deb from the
# Debian archive this machine's apt is configured with (scripts/lib/apt-mirror.sh) through a
# temporary apt source list for bookworm (nothing is added to the system's sources) and extract
# /usr/bin/etcd from it (a Go binary needing only libc). No package is installed.
#
# Env: ETCD_BIN (use this binary if it exists), ETCD_INSTALL_DIR (default: <repo>/.tools),
#   DEBIAN_MIRROR (the archive's base URI; default: derived from /etc/apt).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest_dir=${ETCD_INSTALL_DIR:-$repo/.tools}
dest=$dest_dir/etcd

if [ -n "${ETCD_BIN:-}" ] && [ -x "${ETCD_BIN}" ]; then
  echo "$ETCD_BIN"; exit 0
fi
if [ -x "$dest" ] && "$dest" --version >/dev/null 2>&1; then
  echo "$dest"; exit 0
fi

log() { echo "install-etcd: $*" >&2; }
# shellcheck source-path=SCRIPTDIR source=lib/apt-mirror.sh
. "$repo/scripts/lib/apt-mirror.sh"
mirror=$(debian_mirror) || { log "cannot tell which Debian archive to fetch etcd from"; exit 1; }
mkdir -p "$dest_dir"
# shellcheck source-path=SCRIPTDIR source=lib/deb-binary.sh
. "$repo/scripts/lib/deb-binary.sh"
# deb_binary installs the .deb's /usr/bin/<package>; etcd-server's binary is /usr/bin/etcd: once
# dpkg-deb has extracted the package, link the name deb_binary looks for to it.
dpkg-deb() {
  command dpkg-deb "$@"
  if [ "$1" = -x ]; then ln -sf etcd "$3/usr/bin/etcd-server"; fi
}
deb_binary etcd-server "$dest" "$mirror" bookworm bookworm-updates
unset -f dpkg-deb
log "installed $("$dest" --version 2>&1 | sed -n 1p) at $dest"
echo "$dest"
