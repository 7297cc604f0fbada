#!/usr/bin/env bash
# User-space instructions per proxied request under callgrind, gateway vs nginx. See bench/callgrind.py.
#   bash bench/callgrind.sh [--proxies gateway,nginx] [--annotate] [--duration 10]
# Env: BENCH_NO_BUILD=1 skips the release build.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"
. bench/tools.sh
install_missing nginx=nginx-light wrk=wrk valgrind=valgrind
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build -q --release --bins
exec python3 bench/callgrind.py "$@"
