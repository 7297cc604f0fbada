#!/usr/bin/env bash
# Balancing policies under load (issue 13, item 5): three instances, one 50 ms slower; the same
# open-loop offered load through the gateway under --balance random, round-robin and
# least-request; p50/p99 latency and each instance's share. See bench/balance.py.
#   bash bench/balance.sh [--rate 300] [--seconds 10] [--slow-ms 50] [--policies random,least-request]
# Env: BENCH_NO_BUILD=1 skips the release build (gateway, watcher).
set -euo pipefail
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$bench")
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"
. "$bench/tools.sh"
install_missing python3=python3
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  echo "bench: cargo build --release (gateway, watcher)" >&2
  CARGO_INCREMENTAL=0 cargo build -q --release -p gateway -p watcher --bins
fi
# balance.py stops everything it started; this is the backstop if it is killed outright.
trap "kill_run_groups 'balance-*' $(date +%s)" EXIT
trap 'exit 130' INT TERM
python3 "$bench/balance.py" "$@"
