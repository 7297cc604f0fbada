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
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/sources.list.d"
cat >"$work/sources.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bullseye main
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
log "fetching the bullseye package index from $mirror (temporary source list)"
apt-get "${apt_opts[@]}" -q update >&2
log "downloading consul from bullseye"
(cd "$work" && apt-get "${apt_opts[@]}" -q download consul >&2)
deb=$(ls "$work"/consul_*.deb | head -n1)
dpkg-deb -x "$deb" "$work/root"
install -m 0755 "$work/root/usr/bin/consul" "$dest"
log "installed $("$dest" version | sed -n 1p) at $dest"
echo "$dest"
