# shellcheck shell=bash
# The base URI of the Debian archive this machine's apt is configured with, so that scripts
# fetching from Debian (install-consul.sh, build-images.sh) use the same mirror apt does and the
# repository names none.
#
# Source it and call `debian_mirror [ETC_DIR]` (ETC_DIR defaults to /etc/apt; the tests pass a
# fixture directory), or run it: `bash scripts/lib/apt-mirror.sh [ETC_DIR]`. It prints one URI,
# without a trailing slash, on stdout; on failure it explains on stderr, naming the files it read,
# and returns 1.
#
# DEBIAN_MIRROR, when set and non-empty, is printed as is: the explicit override.
#
# What it reads, in apt's order: ETC_DIR/sources.list, then ETC_DIR/sources.list.d/*.list and
# *.sources sorted by name. Other names there (*.disabled*, *.save, ...) are ignored, as apt does.
#   - one-line format: `deb [opt=val ...] URI SUITE [COMPONENT...]`, `#` starts a comment;
#   - deb822 format: stanzas separated by blank lines with Types:, URIs:, Suites:, Components:
#     (several URIs and suites per stanza allowed); `Enabled: no` (or false, off, 0) stanzas are skipped; CRLF line ends are read too.
# An entry counts as the Debian archive when its type is `deb`, one of its suites is a Debian
# release (a codename such as bookworm or bullseye, or stable/testing/...; optionally with
# -updates, -backports or -proposed-updates) and its components include `main`. That leaves out
# the security archive (suites *-security only) and third-party repositories (own suite names, or
# no `main`). URIs apt reaches through a scheme debootstrap does not speak (cdrom:, mirror+...,
# tor+...) are skipped. The first URI of the first such entry wins.

# The parser (awk, POSIX; mawk is fine). Prints the chosen URI and stops at the first one.
# shellcheck disable=SC2016 # awk's $ fields, not the shell's
_apt_mirror_awk='
function is_debian_suite(s,   base) {
  base = s
  sub(/-(updates|backports|proposed-updates)$/, "", base)
  return base ~ /^(jessie|stretch|buster|bullseye|bookworm|trixie|forky|duke|sid|oldoldstable|oldstable|stable|testing|unstable)$/
}
function usable_uri(u) {
  return u ~ /^(https?|ftp|file):/
}
# Prints the first usable URI of an entry that is the Debian archive; returns 1 if it printed.
function consider(types, uris, suites, comps,   nt, t, ns, s, nc, c, nu, u, i, deb, rel, main) {
  nt = split(types, t, /[ \t]+/); deb = 0
  for (i = 1; i <= nt; i++) if (t[i] == "deb") deb = 1
  ns = split(suites, s, /[ \t]+/); rel = 0
  for (i = 1; i <= ns; i++) if (is_debian_suite(s[i])) rel = 1
  nc = split(comps, c, /[ \t]+/); main = 0
  for (i = 1; i <= nc; i++) if (c[i] == "main") main = 1
  if (!deb || !rel || !main) return 0
  nu = split(uris, u, /[ \t]+/)
  for (i = 1; i <= nu; i++) {
    if (u[i] != "" && usable_uri(u[i])) { sub(/\/+$/, "", u[i]); print u[i]; return 1 }
  }
  return 0
}
# apt reads a boolean as false from no, false, without, off, disable or 0.
function is_false(v) { v = tolower(v); return v == "no" || v == "false" || v == "without" || v == "off" || v == "disable" || v == "0" }
function end_stanza() {
  if (in_stanza && !is_false(f["enabled"]) && consider(f["types"], f["uris"], f["suites"], f["components"])) {
    found = 1; exit 0
  }
  in_stanza = 0; key = ""
  split("", f)
}
{ sub(/\r$/, "") }                            # files saved with CRLF line ends
FNR == 1 {
  if (deb822) end_stanza()
  deb822 = (FILENAME ~ /\.sources$/)
  in_stanza = 0; key = ""
}
deb822 {
  if ($0 ~ /^#/) next
  if ($0 ~ /^[ \t]*$/) { end_stanza(); next }
  if ($0 ~ /^[ \t]/) {                        # continuation of the previous field
    if (key != "") { v = $0; gsub(/^[ \t]+|[ \t]+$/, "", v); f[key] = f[key] " " v }
    next
  }
  i = index($0, ":")
  if (i == 0) next
  key = tolower(substr($0, 1, i - 1)); gsub(/[ \t]+$/, "", key)
  v = substr($0, i + 1); gsub(/^[ \t]+|[ \t]+$/, "", v)
  f[key] = v; in_stanza = 1
  next
}
{
  line = $0
  sub(/#.*/, "", line)
  n = split(line, w, /[ \t]+/)
  j = 1
  if (w[j] == "") j++                         # leading blanks
  if (j > n) next
  type = w[j++]
  if (substr(w[j], 1, 1) == "[") {           # options: up to the field that ends in ]
    while (j <= n && w[j] !~ /\]$/) j++
    j++
  }
  uri = w[j++]; suite = w[j++]
  comps = ""
  for (; j <= n; j++) comps = comps " " w[j]
  if (consider(type, uri, suite, comps)) { found = 1; exit 0 }
}
END { if (!found && deb822) end_stanza() }
'

debian_mirror() {
  local override=${DEBIAN_MIRROR:-}
  override=${override//[[:space:]]/}           # blank counts as unset
  if [ -n "$override" ]; then
    printf '%s\n' "${override%/}"
    return 0
  fi
  local etc=${1:-/etc/apt}
  local files=() f
  [ -e "$etc/sources.list" ] && files+=("$etc/sources.list")
  for f in "$etc"/sources.list.d/*; do
    case "$f" in
      *.list | *.sources) [ -f "$f" ] && files+=("$f") ;;
    esac
  done
  local uri=""
  if [ "${#files[@]}" -gt 0 ]; then
    uri=$(awk "$_apt_mirror_awk" "${files[@]}")
  fi
  if [ -n "$uri" ]; then
    printf '%s\n' "$uri"
    return 0
  fi
  local read="none"
  if [ "${#files[@]}" -gt 0 ]; then read="${files[*]}"; fi
  {
    echo "apt-mirror: no Debian archive found in this machine's apt configuration"
    echo "  looked for: $etc/sources.list, $etc/sources.list.d/*.list, $etc/sources.list.d/*.sources"
    echo "  files read: $read"
    echo "  (wanted: an enabled 'deb' entry with a Debian release suite such as bookworm and component main)"
    echo "  set DEBIAN_MIRROR to the archive's base URI to choose one explicitly"
  } >&2
  return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  debian_mirror "$@"
fi
