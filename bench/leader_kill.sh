#!/usr/bin/env bash
# How long updates stall in the gateway when the Consul leader is killed, per consistency mode
# (bench/leader_kill.py says what is measured). Builds the images offline first, as the container
# e2e test does (scripts/build-images.sh; BENCH_SKIP_BUILD=1 uses CONSUL_IMAGE/GATEWAY_IMAGE as set).
# Usage: bench/leader_kill.sh [--modes default,stale,consistent] [--settle 5] [--after 25] [--out FILE]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  exports=$(scripts/build-images.sh all)
  eval "$exports"
fi
PYTHONDONTWRITEBYTECODE=1 exec python3 bench/leader_kill.py "$@"
