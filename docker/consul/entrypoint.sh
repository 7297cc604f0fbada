#!/bin/sh
# Entrypoint of the locally built Consul image (scripts/build-images.sh), compatible with the
# official hashicorp/consul image for the commands docker-compose.yml uses: `agent ...` becomes
# `consul agent -data-dir=/consul/data -config-dir=/consul/config ...`, a leading `-flag` means
# `consul -flag`, any other Consul subcommand is run as `consul <subcommand>`. Anything else runs
# as given (e.g. `sh`). Consul runs as the unprivileged `consul` user.
set -e

CONSUL_DATA_DIR=/consul/data
CONSUL_CONFIG_DIR=/consul/config

if [ -n "$CONSUL_LOCAL_CONFIG" ]; then
  echo "$CONSUL_LOCAL_CONFIG" >"$CONSUL_CONFIG_DIR/local.json"
fi

case "$1" in
  -*) set -- consul "$@" ;;
esac

if [ "$1" = agent ]; then
  shift
  set -- consul agent -data-dir="$CONSUL_DATA_DIR" -config-dir="$CONSUL_CONFIG_DIR" "$@"
elif [ "$1" != consul ] && [ -n "$1" ] && consul --help 2>&1 | grep -q "^    $1 "; then
  set -- consul "$@"
fi

if [ "$1" = consul ] && [ "$(id -u)" = 0 ]; then
  chown -R consul:consul "$CONSUL_DATA_DIR" "$CONSUL_CONFIG_DIR" 2>/dev/null || true
  exec setpriv --reuid=consul --regid=consul --init-groups "$@"
fi
exec "$@"
