#!/usr/bin/env bash
# What one change costs the watcher and Consul, by watch mode (multiplexed over HTTP/1.1, streams
# over HTTP/2), at 2,500 and 5,000 services x 3. See the docstring of bench/change_cost.py.
#
#   bash bench/change_cost.sh                 # full run (about 15 minutes)
#   bash bench/change_cost.sh --smoke         # 200 services, a minute
#   bash bench/change_cost.sh --help          # every option
#
# Env: BENCH_NO_BUILD=1 skips `cargo build --release -p watcher`.
set -euo pipefail
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$bench")
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"
. "$bench/tools.sh"
case " $* " in *" --help "*|*" -h "*) exec python3 "$bench/change_cost.py" "$@" ;; esac
[ -x .tools/consul ] || bash scripts/install-consul.sh
command -v ss >/dev/null || { echo "change_cost: ss (iproute2) is missing" >&2; exit 2; }
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  echo "change_cost: cargo build --release -p watcher" >&2
  cargo build -q --release -p watcher
fi
# change_cost.py stops everything it started; this trap is the backstop if it is killed outright.
trap "kill_run_groups 'change-cost-*' $(date +%s)" EXIT
trap 'exit 130' INT TERM
python3 "$bench/change_cost.py" "$@"
