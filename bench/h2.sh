#!/usr/bin/env bash
# HTTP/2 at the front, gateway vs nginx: h2load over TLS (h2) and h2c prior knowledge. See bench/h2.py.
#   bash bench/h2.sh [--duration 5] [--clients 32] [--streams 10] [--rounds 1]
# Env: BENCH_NO_BUILD=1 skips the release build.
set -euo pipefail
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$bench")
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"
. "$bench/tools.sh"
install_missing nginx=nginx-light h2load=nghttp2-client openssl=openssl taskset=util-linux python3=python3
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build -q --release --bins
# The backstop if h2.py is killed outright: it ends the process groups it recorded, nothing else.
trap "kill_run_groups 'h2-*' $(date +%s)" EXIT
trap 'exit 130' INT TERM
python3 "$bench/h2.py" "$@"
