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
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/sources.list.d"
cat >"$work/sources.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-updates main
LIST
apt_opts=(
  -o "Dir::Etc::sourcelist=$work/sources.list"
  -o "Dir::Etc::sourceparts=$work/sources.list.d"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache::archives=$work/archives"
  -o "Debug::NoLocking=1"
  -o "APT::Get::List-Cleanup=0"
  -o "APT::Sandbox::User=root"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
)
log "fetching the bookworm package index from $mirror (temporary source list)"
apt-get "${apt_opts[@]}" -q update >&2
log "downloading prometheus from bookworm"
(cd "$work" && apt-get "${apt_opts[@]}" -q download prometheus >&2)
deb=$(ls "$work"/prometheus_*.deb | head -n1)
dpkg-deb -x "$deb" "$work/root"
install -m 0755 "$work/root/usr/bin/prometheus" "$dest"
log "installed $("$dest" --version 2>&1 | sed -n 1p) at $dest"
echo "$dest"
