#!/usr/bin/env bash
# User-space instructions per proxied request under callgrind, gateway vs nginx. See bench/callgrind.py.
#   bash bench/callgrind.sh [--proxies gateway,nginx] [--annotate] [--duration 10]
# Env: BENCH_NO_BUILD=1 skips the release build.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v valgrind >/dev/null || missing+=(valgrind)
if [ ${#missing[@]} -gt 0 ]; then
  echo "callgrind: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
fi
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build -q --release --bins
exec python3 bench/callgrind.py "$@"
