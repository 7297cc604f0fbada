#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer; fuzz/README.md) for a bounded time each.
#
#   bash scripts/fuzz.sh [--seconds N] [target...]
#
# Installs cargo-fuzz if needed (scripts/install-cargo-fuzz.sh; needs the nightly toolchain),
# builds every target once (release, debug assertions and overflow checks on, AddressSanitizer),
# then runs each given target (default: all) for N seconds (default 20) with -max_total_time=N,
# one after the other, on a fresh COPY of its committed seed corpus (fuzz/corpus/<target>) under
# fuzz/out/ (ignored by git), with its dictionary (fuzz/dict/<target>.dict). Per target it prints
# executions, coverage and corpus size. A crash, a failed invariant, a leak, a timeout (10 s per
# input) or an out-of-memory stops that target: its artifact is printed (path and hex dump) and
# the script exits non-zero after the others ran. The last line is `N passed, N failed` (one per
# target), which scripts/test.sh adds to its summary.
#
# Cost: the first build compiles the crates and their dependencies with the sanitizer under
# nightly (several minutes on two cores; fuzz/target is reused afterwards), then N seconds per
# target.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

seconds=20
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --seconds=*) seconds=${1#--seconds=}; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
case $seconds in ''|*[!0-9]*|0) echo "fuzz.sh: --seconds wants a positive integer, not '$seconds'" >&2; exit 2 ;; esac

bin=$(bash scripts/install-cargo-fuzz.sh)
export PATH="$(dirname "$bin"):$PATH"
fuzz() { cargo +nightly fuzz "$@"; }

all=$(fuzz list)
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets <<<"$all"
fi
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$all" || { echo "fuzz.sh: no fuzz target '$t' (have: $(echo $all))" >&2; exit 2; }
done

echo "fuzz.sh: building the fuzz targets (nightly, AddressSanitizer, debug assertions)"
mkdir -p fuzz/out
start=$(date +%s)
if ! fuzz build >fuzz/out/build.log 2>&1; then
  tail -n 40 fuzz/out/build.log >&2
  echo "fuzz.sh: the build failed (fuzz/out/build.log)" >&2
  echo "0 passed, ${#targets[@]} failed"
  exit 1
fi
echo "fuzz.sh: built in $(( $(date +%s) - start ))s"

passed=0
failed=0
for t in "${targets[@]}"; do
  out=fuzz/out/$t
  rm -rf "$out"
  mkdir -p "$out/corpus" "$out/artifacts"
  cp -a "fuzz/corpus/$t/." "$out/corpus/"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$out/artifacts/")
  [ -f "fuzz/dict/$t.dict" ] && args+=(-dict="fuzz/dict/$t.dict")
  [ "$t" = consul_model ] && args+=(-max_len=8192)
  log=$out/fuzz.log
  echo "fuzz.sh: $t for ${seconds}s (log: $log)"
  status=0
  fuzz run "$t" "$out/corpus" -- "${args[@]}" >"$log" 2>&1 || status=$?
  execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | awk '{ print $2 }')
  corpus=$(find "$out/corpus" -type f | wc -l)
  if [ "$status" -eq 0 ] && ! ls "$out"/artifacts/* >/dev/null 2>&1; then
    echo "fuzz.sh: $t ok: ${execs:-?} executions, coverage ${cov:-?} edges, corpus $corpus inputs"
    passed=$((passed + 1))
  else
    echo "fuzz.sh: $t FAILED (exit $status): ${execs:-?} executions" >&2
    grep -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY' "$log" | head -n 20 >&2 || true
    for a in "$out"/artifacts/*; do
      [ -f "$a" ] || continue
      echo "fuzz.sh: artifact $a ($(wc -c <"$a") bytes); reproduce: cargo +nightly fuzz run $t $a" >&2
      { od -A d -c "$a" | head -n 20; } >&2 || true
    done
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
