#!/usr/bin/env bash
# The whole system on loopback, no Docker: a Consul dev agent, three self-registering serviceweb
# instances and the gateway (which spawns its watcher). Prints what to try, follows the gateway's
# log (where every change shows up), and stops everything on Ctrl-C.
#
#   scripts/demo.sh                 # run until Ctrl-C
#   DEMO_SMOKE=1 scripts/demo.sh    # start, check routing and a change, stop (used by the tests)
#
# Env: DEMO_PORT (gateway, default 3000), DEMO_ADMIN_PORT (8081), DEMO_CONSUL_PORT (8500),
#      DEMO_PROFILE (release|debug, default release).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"

port=${DEMO_PORT:-3000}
admin=${DEMO_ADMIN_PORT:-8081}
consul_port=${DEMO_CONSUL_PORT:-8500}
profile=${DEMO_PROFILE:-release}
logs=$repo/.demo/logs
mkdir -p "$logs"
rm -f "$logs"/*.log

consul=$(bash scripts/install-consul.sh)
# The etcd client crate's build script needs protoc (installed from Debian when missing).
bash scripts/install-protoc.sh >/dev/null
flag=$([ "$profile" = release ] && echo --release || true)
echo "building the binaries ($profile)..." >&2
cargo build -q $flag --bins
bin=$repo/target/$profile

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo >&2; echo "stopping..." >&2
  # Gateway first (it stops its watcher), then the instances (they deregister), then Consul.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

start() { # name, command...
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids=("$!" "${pids[@]}")   # newest first, so cleanup stops in reverse order
}

wait_http() { # url, what
  for _ in $(seq 1 150); do curl -fs -o /dev/null "$1" && return 0; sleep 0.2; done
  echo "$2 did not come up; see $logs" >&2; exit 1
}

for p in "$port" "$admin" "$consul_port" $((port + 1)) $((port + 2)) $((port + 3)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is already in use on 127.0.0.1; set DEMO_PORT / DEMO_ADMIN_PORT / DEMO_CONSUL_PORT" >&2
    exit 1
  fi
done
start consul "$consul" agent -dev -bind 127.0.0.1 -client 127.0.0.1 \
  -hcl "ports { http = $consul_port, dns = -1, grpc = -1 }"
wait_http "http://127.0.0.1:$consul_port/v1/status/leader" "Consul"
sleep 1
export CONSUL_HTTP_ADDR=127.0.0.1:$consul_port
for i in 1 2 3; do
  start "serviceweb-$i" "$bin/serviceweb" --listen "127.0.0.1:$((port + i))" --register
done
for i in 1 2 3; do wait_http "http://127.0.0.1:$((port + i))/health" "serviceweb $i"; done
start gateway "$bin/gateway" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin"
wait_http "http://127.0.0.1:$admin/readyz" "the gateway"

cat <<MSG

  The gateway routes /service-web/* over three instances that registered themselves in Consul
  with the tag \`gateway\` (no gateway flag names them):
    curl 127.0.0.1:$port/service-web/getRemoteIp      # answered by a random instance
    curl 127.0.0.1:$admin/routes                       # the route table
    curl 127.0.0.1:$admin/services                     # what the gateway knows
    curl 127.0.0.1:$admin/readyz
    kill \$(pgrep -f 'serviceweb --listen 127.0.0.1:$((port + 1))')   # watch the change below
  Consul UI: http://127.0.0.1:$consul_port/ui      Logs: $logs/
  Ctrl-C stops everything.

MSG

if [ -n "${DEMO_SMOKE:-}" ]; then
  seen=$(for _ in $(seq 1 30); do curl -fs "127.0.0.1:$port/service-web/getRemoteIp"; echo; done | grep -o '"port":[0-9]*' | sort -u | wc -l)
  echo "distinct instances answering: $seen"
  [ "$seen" = 3 ] || { echo "demo smoke: expected 3 instances" >&2; exit 1; }
  kill -TERM "$(pgrep -f "serviceweb --listen 127.0.0.1:$((port + 1))")"
  for _ in $(seq 1 50); do grep -q "3 -> 2 instances" "$logs/gateway.log" && break; sleep 0.1; done
  grep "3 -> 2 instances" "$logs/gateway.log" || { echo "demo smoke: no change line" >&2; exit 1; }
  echo "demo smoke: ok"
  exit 0
fi
tail -n +1 -f "$logs/gateway.log"
