# shellcheck shell=bash
# Fetches one package's .deb from a Debian suite of the archive this machine's apt is configured
# with, through a temporary apt source list (nothing is added to the system's sources and no
# package is installed), and installs its /usr/bin/<package> at a destination. Sourced by the
# install-*.sh scripts, after scripts/lib/apt-mirror.sh.
#
#   deb_binary <package> <dest> <mirror> <suite>...
#
# Logs to stderr through the caller's `log`; fails (set -e) if apt cannot fetch the package.
deb_binary() {
  local package=$1 dest=$2 mirror=$3
  shift 3
  local work
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: $work is local; the trap removes itself
  trap "rm -rf '$work'; trap - RETURN" RETURN
  mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/sources.list.d"
  local suite
  for suite in "$@"; do
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main"
  done >"$work/sources.list"
  local apt_opts=(
    -o "Dir::Etc::sourcelist=$work/sources.list"
    -o "Dir::Etc::sourceparts=$work/sources.list.d"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache::archives=$work/archives"
    -o "Debug::NoLocking=1"
    -o "APT::Get::List-Cleanup=0"
    -o "APT::Sandbox::User=root"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  )
  log "fetching the $* package index from $mirror (temporary source list)"
  apt-get "${apt_opts[@]}" -q update >&2
  log "downloading $package from $1"
  (cd "$work" && apt-get "${apt_opts[@]}" -q download "$package" >&2)
  local deb
  deb=$(ls "$work/${package}"_*.deb | head -n1)
  dpkg-deb -x "$deb" "$work/root"
  install -m 0755 "$work/root/usr/bin/$package" "$dest"
}
