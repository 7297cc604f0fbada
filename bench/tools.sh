# Sourced by bench/run.sh, bench/callgrind.sh and bench/change_cost.sh.

# Installs, from Debian, the package of each command that is missing; idempotent.
# Usage: install_missing nginx=nginx-light wrk=wrk ...
install_missing() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "bench: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
}

# The backstop if the Python harness is killed outright (it stops what it started otherwise):
# kills the process groups listed in the newest run directory matching $1 (a glob under
# bench/out/, e.g. '*' or 'change-cost-*'), if that run began at or after $2 (Unix time).
# Usage: trap "kill_run_groups '*' $(date +%s)" EXIT
kill_run_groups() {
  local pattern=$1 started=$2 dir pg
  dir=$(ls -1dt "$bench"/out/$pattern/ 2>/dev/null | head -n1 || true)
  [ -n "$dir" ] && [ -f "$dir/pgids" ] || return 0
  [ "$(stat -c %Y "$dir")" -ge "$started" ] || return 0
  while read -r pg; do
    kill -KILL -- "-$pg" 2>/dev/null || true
  done <"$dir/pgids"
}
