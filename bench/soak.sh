#!/usr/bin/env bash
# Churn soak (issue 14): the gateway under wrk load while 50 services' instances are registered and
# deregistered at 20 operations/s. See bench/soak.py and bench/README.md ("Churn soak").
#
#   bash bench/soak.sh                          # 10 minutes (+30 s warm-up)
#   bash bench/soak.sh --soak-duration 30s      # CI
#   bash bench/soak.sh --bin-dir ../main/target/release   # another build's binaries (no build here)
#   bash bench/soak.sh --help                   # every option
#
# Env: BENCH_NO_BUILD=1 skips `cargo build --release --bins` (use the binaries already in target/release);
# so does --bin-dir.
set -euo pipefail
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$bench")
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"

. "$bench/tools.sh"
install_missing nginx=nginx-light wrk=wrk python3=python3

case " $* " in
  *" --help "*|*" -h "*) exec python3 "$bench/soak.py" "$@" ;;
  *" --bin-dir "*|*" --bin-dir="*) ;;
  *) if [ -z "${BENCH_NO_BUILD:-}" ]; then
       echo "soak: cargo build --release --bins" >&2
       cargo build -q --release --bins
     fi ;;
esac

# soak.py stops everything it started; this trap is the backstop if it is killed outright.
trap "kill_run_groups 'soak-*' $(date +%s)" EXIT
trap 'exit 130' INT TERM
python3 "$bench/soak.py" "$@"
