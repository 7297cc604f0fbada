#!/usr/bin/env bash
# Issue 4's measuring harness: gateway vs nginx on loopback (throughput, latency, CPU per request,
# memory), change propagation, failover, and scale. See bench/README.md.
#
#   bash bench/run.sh            # full run (about 7 minutes), writes bench/RESULTS.md
#   bash bench/run.sh --smoke    # everything in well under a minute, for CI; never asserts on timing
#   bash bench/run.sh --help     # every option
#
# Env: BENCH_NO_BUILD=1 skips `cargo build --release --bins` (use the binaries already in target/release).
set -euo pipefail
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$bench")
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"

# Tools from Debian, installed idempotently (nginx-light has the upstream `random` balancer).
. "$bench/tools.sh"
install_missing nginx=nginx-light wrk=wrk taskset=util-linux python3=python3 curl=curl

case " $* " in *" --help "*|*" -h "*) exec python3 "$bench/bench.py" "$@" ;; esac

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  echo "bench: cargo build --release --bins" >&2
  cargo build -q --release --bins
fi

# bench.py stops everything it started; this trap is the backstop if it is killed outright:
# it ends the process groups recorded in the newest run directory's pgids file, nothing else.
trap "kill_run_groups '*' $(date +%s)" EXIT
trap 'exit 130' INT TERM
python3 "$bench/bench.py" "$@"
