#!/usr/bin/env bash
# Installs the Prometheus server the metrics end-to-end test scrapes the gateway with,
# idempotently, into a project-local directory, and prints its path on stdout.
#
# Debian 12 (bookworm) ships prometheus 2.42. We fetch that .deb from the Debian archive this
# machine's apt is configured with (scripts/lib/apt-mirror.sh) through a temporary apt source
# list for bookworm (nothing is added to the system's sources) and extract /usr/bin/prometheus
# from it (a Go binary needing only libc). No package is installed.
#
# Env: PROMETHEUS_BIN (use this binary if it exists), PROMETHEUS_INSTALL_DIR (default:
#   <repo>/.tools), DEBIAN_MIRROR (the archive's base URI; default: derived from /etc/apt).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest_dir=${PROMETHEUS_INSTALL_DIR:-$repo/.tools}
dest=$dest_dir/prometheus

if [ -n "${PROMETHEUS_BIN:-}" ] && [ -x "${PROMETHEUS_BIN}" ]; then
  echo "$PROMETHEUS_BIN"; exit 0
fi
if [ -x "$dest" ] && "$dest" --version >/dev/null 2>&1; then
  echo "$dest"; exit 0
fi

log() { echo "install-prometheus: $*" >&2; }
# shellcheck source-path=SCRIPTDIR source=lib/apt-mirror.sh
. "$repo/scripts/lib/apt-mirror.sh"
mirror=$(debian_mirror) || { log "cannot tell which Debian archive to fetch prometheus from"; exit 1; }
mkdir -p "$dest_dir"
# shellcheck source-path=SCRIPTDIR source=lib/deb-binary.sh
. "$repo/scripts/lib/deb-binary.sh"
deb_binary prometheus "$dest" "$mirror" bookworm bookworm-updates
log "installed $("$dest" --version 2>&1 | sed -n 1p) at $dest"
echo "$dest"
