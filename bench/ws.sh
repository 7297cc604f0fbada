#!/usr/bin/env bash
# WebSocket echo throughput (issue 11): through the gateway, directly to the instance, and through
# nginx, on loopback, a few seconds each. See bench/ws.py.
#   bash bench/ws.sh [--seconds 3] [--rounds 3] [--connections 1,8] [--sizes 64,16384] [--no-nginx]
# Env: BENCH_NO_BUILD=1 skips the release build (gateway, watcher, ws-bench).
set -euo pipefail
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$bench")
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"
. "$bench/tools.sh"
install_missing nginx=nginx-light python3=python3
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  echo "bench: cargo build --release (gateway, watcher, ws-bench)" >&2
  cargo build -q --release -p gateway -p watcher -p e2e --bins
fi
# ws.py stops everything it started; this is the backstop if it is killed outright.
trap "kill_run_groups 'ws-*' $(date +%s)" EXIT
trap 'exit 130' INT TERM
python3 "$bench/ws.py" "$@"
