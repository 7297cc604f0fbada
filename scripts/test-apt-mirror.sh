#!/usr/bin/env bash
# Tests scripts/lib/apt-mirror.sh: against this machine's apt configuration and against fixture
# directories laid out like /etc/apt (one-line and deb822 formats, options, comments, disabled
# stanzas and files, the security archive, third-party repositories, nothing at all).
# Fixture hosts are under .invalid, which never resolves. Last line: `N passed, N failed`;
# the exit status is non-zero when anything failed.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/apt-mirror.sh
. "$here/lib/apt-mirror.sh"
unset DEBIAN_MIRROR

passed=0 failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { passed=$((passed + 1)); echo "ok   $1"; }
not_ok() { failed=$((failed + 1)); echo "FAIL $1"; shift; printf '       %s\n' "$@"; }

# expect NAME DIR WANTED: debian_mirror DIR prints WANTED and succeeds.
expect() {
  local name=$1 dir=$2 want=$3 got rc
  got=$(debian_mirror "$dir" 2>"$tmp/err"); rc=$?
  if [ "$rc" = 0 ] && [ "$got" = "$want" ]; then
    ok "$name"
  else
    not_ok "$name" "want: $want (exit 0)" "got:  $got (exit $rc)" "stderr: $(cat "$tmp/err")"
  fi
}

# expect_none NAME DIR FILE...: debian_mirror DIR fails, prints nothing on stdout, and its
# message on stderr names each FILE it read (or says it read none).
expect_none() {
  local name=$1 dir=$2 got rc f missing=""
  shift 2
  got=$(debian_mirror "$dir" 2>"$tmp/err"); rc=$?
  for f in "$@"; do grep -qF "$f" "$tmp/err" || missing="$missing $f"; done
  if [ "$rc" != 0 ] && [ -z "$got" ] && grep -q 'no Debian archive found' "$tmp/err" && [ -z "$missing" ]; then
    ok "$name"
  else
    not_ok "$name" "want: failure naming:$* " "got:  '$got' (exit $rc), not named:$missing" "stderr: $(cat "$tmp/err")"
  fi
}

# fixture NAME: a fresh directory laid out like /etc/apt; prints its path.
fixture() { mkdir -p "$tmp/$1/sources.list.d"; echo "$tmp/$1"; }

# --- this machine ---------------------------------------------------------------------------
# Whatever it picks must be one of the URIs apt's own files list for a non-security suite.
real_uris=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
  sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]*\)\{0,1\}\([^[:space:]]*\).*/\2/p' |
  tr -s ' \t' '\n' | sed 's:/*$::' | grep -v '^$' || true)
if [ -z "$real_uris" ]; then
  echo "skip this machine: /etc/apt lists no deb sources"
else
  got=$(debian_mirror 2>"$tmp/err"); rc=$?
  if [ "$rc" = 0 ] && printf '%s\n' "$real_uris" | grep -qxF -- "$got" && [ "${got%-security}" = "$got" ]; then
    ok "this machine's /etc/apt -> $got"
  else
    not_ok "this machine's /etc/apt" "got: '$got' (exit $rc); listed: $(printf '%s\n' "$real_uris" | tr '\n' ' ')" "stderr: $(cat "$tmp/err")"
  fi
fi
# The real deb822 file alone, then next to disabled and backup files that would win if read.
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  d=$(fixture real-alone)
  cp /etc/apt/sources.list.d/debian.sources "$d/sources.list.d/"
  want=$(debian_mirror "$d" 2>"$tmp/err"); rc=$?
  if [ "$rc" = 0 ] && [ -n "$want" ] && [ "${want%-security}" = "$want" ]; then
    ok "this machine's debian.sources alone -> $want"
  else
    not_ok "this machine's debian.sources alone" "got: '$want' (exit $rc)" "stderr: $(cat "$tmp/err")"
  fi
  d=$(fixture real-disabled)
  cp /etc/apt/sources.list.d/debian.sources "$d/sources.list.d/"
  printf 'Types: deb\nURIs: http://disabled.invalid/debian\nSuites: bookworm\nComponents: main\n' \
    >"$d/sources.list.d/00-aaa.sources.disabled-by-farm"
  echo 'deb http://disabled.invalid/debian bookworm main' >"$d/sources.list.d/00-aaa.list.disabled-by-farm"
  echo 'deb http://save.invalid/debian bookworm main' >"$d/sources.list.d/00-aaa.list.save"
  expect "this machine's debian.sources: *.disabled-by-farm and *.save ignored" "$d" "$want"
fi

# --- one-line format (sources.list) ----------------------------------------------------------
d=$(fixture oneline)
cat >"$d/sources.list" <<'EOF'
# deb http://commented.invalid/debian bookworm main
#deb http://commented2.invalid/debian bookworm main

deb-src http://src.invalid/debian bookworm main
deb http://security.invalid/debian-security bookworm-security main
deb http://mirror.invalid/debian/ bookworm main contrib   # trailing comment
deb http://second.invalid/debian bookworm main
EOF
expect "one-line: comments, deb-src and security skipped, trailing slash dropped" "$d" "http://mirror.invalid/debian"

d=$(fixture options)
cat >"$d/sources.list" <<'EOF'
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://opts.invalid/debian bullseye main
EOF
expect "one-line: [options] in brackets" "$d" "http://opts.invalid/debian"

d=$(fixture options-spaced)
cat >"$d/sources.list" <<'EOF'
	deb [ arch=amd64,arm64 trusted=yes ]   https://spaced.invalid/debian   stable-updates   non-free main
EOF
expect "one-line: [ spaced options ], https, leading tab, -updates suite" "$d" "https://spaced.invalid/debian"

d=$(fixture thirdparty-list)
cat >"$d/sources.list.d/00-nodesource.list" <<'EOF'
deb [signed-by=/etc/apt/keyrings/nodesource.gpg] https://nodesource.invalid/node_20.x nodistro main
deb [arch=amd64] https://docker.invalid/linux/debian bookworm stable
deb http://pgdg.invalid/pub/repos/apt bookworm-pgdg main
EOF
echo 'deb http://archive.invalid/debian trixie main' >"$d/sources.list.d/zz-debian.list"
expect "one-line: third-party repos skipped even when they sort first" "$d" "http://archive.invalid/debian"

d=$(fixture order)
echo 'deb http://from-sources-list.invalid/debian bookworm main' >"$d/sources.list"
echo 'deb http://from-parts.invalid/debian bookworm main' >"$d/sources.list.d/00.list"
expect "sources.list is read before sources.list.d" "$d" "http://from-sources-list.invalid/debian"

# --- deb822 format (*.sources) ---------------------------------------------------------------
d=$(fixture deb822)
cat >"$d/sources.list.d/debian.sources" <<'EOF'
# a comment before the first stanza
Types: deb-src
URIs: http://src-only.invalid/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://off.invalid/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb
URIs: http://security.invalid/debian-security
Suites: bookworm-security
Components: main

types: deb deb-src
# a comment inside a stanza
uris: http://first.invalid/debian http://second.invalid/debian
suites: bookworm bookworm-updates
components: main contrib
signed-by: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
expect "deb822: deb-src, Enabled: no and security stanzas skipped; first of several URIs" "$d" "http://first.invalid/debian"

d=$(fixture deb822-multiline)
cat >"$d/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: cdrom:[Debian GNU/Linux 12]/
Suites: bookworm
Components: main

Types: deb
URIs:
 mirror+file:/etc/apt/mirrors.txt
 http://multi.invalid/debian/
Suites: bookworm
Components: main
Enabled: yes
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL0BUBEADmW5NlOnaPtMNp0fzVJvXBEAAAAAAAA
 -----END PGP PUBLIC KEY BLOCK-----
EOF
expect "deb822: multi-line fields, cdrom: and mirror+ URIs skipped" "$d" "http://multi.invalid/debian"

d=$(fixture mixed)
cat >"$d/sources.list.d/00-nodesource.sources" <<'EOF'
Types: deb
URIs: https://nodesource.invalid/node_20.x
Suites: nodistro
Components: main
EOF
cat >"$d/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://security.invalid/debian-security
Suites: bookworm-security
Components: main
EOF
echo 'deb http://in-a-list.invalid/debian sid main' >"$d/sources.list.d/unstable.list"
expect "deb822 + .list: third-party and security skipped, found in a later .list" "$d" "http://in-a-list.invalid/debian"

# --- nothing usable: a clear failure naming the files read ------------------------------------
d=$(fixture security-only)
cat >"$d/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://security.invalid/debian-security
Suites: bookworm-security
Components: main
EOF
expect_none "security-only stanza: fails" "$d" "$d/sources.list.d/debian.sources"

d=$(fixture disabled-only)
cat >"$d/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://off.invalid/debian
Suites: bookworm
Components: main
Enabled: no
EOF
printf '# deb http://commented.invalid/debian bookworm main\n' >"$d/sources.list"
echo 'deb http://disabled.invalid/debian bookworm main' >"$d/sources.list.d/x.list.disabled-by-farm"
expect_none "only disabled/commented entries: fails" "$d" "$d/sources.list" "$d/sources.list.d/debian.sources"
if grep -qF disabled-by-farm "$tmp/err"; then not_ok "a .disabled-by-farm file was read" "$(cat "$tmp/err")"; fi

d=$(fixture empty)
expect_none "no sources at all: fails" "$d" "files read: none"
expect_none "missing directory: fails" "$tmp/does-not-exist" "files read: none"

# --- apt's other false words, and CRLF line ends ---------------------------------------------------
d=$(fixture false-words)
for word in false off 0 Disable; do
  printf 'Types: deb\nURIs: http://%s.invalid/debian\nSuites: bookworm\nComponents: main\nEnabled: %s\n\n' "$word" "$word" \
    >>"$d/sources.list.d/a.sources"
done
printf 'Types: deb\nURIs: http://enabled.invalid/debian\nSuites: bookworm\nComponents: main\nEnabled: yes\n' \
  >>"$d/sources.list.d/a.sources"
expect "deb822: Enabled: false, off, 0 and disable are skipped too" "$d" "http://enabled.invalid/debian"
d=$(fixture crlf)
printf 'Types: deb\r\nURIs: http://crlf.invalid/debian\r\nSuites: bookworm\r\nComponents: main\r\n' >"$d/sources.list.d/c.sources"
expect "deb822 with CRLF line ends" "$d" "http://crlf.invalid/debian"
d=$(fixture crlf-list)
printf 'deb http://crlf-list.invalid/debian bookworm main\r\n' >"$d/sources.list"
expect "one-line with CRLF line ends" "$d" "http://crlf-list.invalid/debian"

# --- the override ------------------------------------------------------------------------------
got=$(DEBIAN_MIRROR=http://override.invalid/debian/ debian_mirror "$tmp/empty" 2>&1); rc=$?
if [ "$rc" = 0 ] && [ "$got" = "http://override.invalid/debian" ]; then
  ok "DEBIAN_MIRROR overrides (no apt config needed)"
else
  not_ok "DEBIAN_MIRROR overrides" "got: '$got' (exit $rc)"
fi

got=$(DEBIAN_MIRROR=' ' debian_mirror "$tmp/crlf" 2>&1); rc=$?
if [ "$rc" = 0 ] && [ "$got" = "http://crlf.invalid/debian" ]; then
  ok "a blank DEBIAN_MIRROR counts as unset"
else
  not_ok "a blank DEBIAN_MIRROR counts as unset" "got: '$got' (exit $rc)"
fi

# --- run as a command ----------------------------------------------------------------------------
got=$(bash "$here/lib/apt-mirror.sh" "$tmp/options" 2>&1); rc=$?
if [ "$rc" = 0 ] && [ "$got" = "http://opts.invalid/debian" ]; then ok "runs as a command"; else not_ok "runs as a command" "got: '$got' (exit $rc)"; fi
bash "$here/lib/apt-mirror.sh" "$tmp/empty" >/dev/null 2>&1; rc=$?
if [ "$rc" != 0 ]; then ok "as a command, exits non-zero when nothing is found"; else not_ok "as a command, exit status on failure" "got 0"; fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
